// A small SocketCluster protocol client (protocol version 2), written for
// this demo: handshake, ping/pong, invoke with acknowledgements, channel
// subscribe and publish, and reconnection with resubscription.
(function (global) {
  'use strict';

  function SC(url) {
    this.url = url;
    this.cid = 1;
    this.pending = {};
    this.channels = {};
    this.listeners = {};
    this.state = 'closed';
    this.id = null;
    this.delay = 500;
    this._connect();
  }

  SC.prototype.on = function (name, fn) {
    (this.listeners[name] = this.listeners[name] || []).push(fn);
  };

  SC.prototype._emit = function (name, arg) {
    (this.listeners[name] || []).forEach(function (fn) { fn(arg); });
  };

  SC.prototype._connect = function () {
    var self = this;
    this.state = 'connecting';
    this._emit('state', this.state);
    var ws = new WebSocket(this.url);
    this.ws = ws;
    this.cid = 1;
    ws.onopen = function () {
      ws.send(JSON.stringify({event: '#handshake', data: {authToken: null}, cid: self.cid++}));
    };
    ws.onmessage = function (ev) { self._onMessage(ev.data); };
    ws.onclose = function (ev) {
      var pending = self.pending;
      self.pending = {};
      Object.keys(pending).forEach(function (k) { pending[k].reject(new Error('connection lost')); });
      self.state = 'closed';
      self._emit('state', self.state);
      if (ev.code === 1000 || ev.code >= 4500) return;
      var wait = (ev.code === 4000 || ev.code === 4001) ? 0 : self.delay;
      self.delay = Math.min(self.delay * 1.5, 10000);
      setTimeout(function () { self._connect(); }, wait);
    };
  };

  SC.prototype._onMessage = function (text) {
    if (text === '') { this.ws.send(''); return; } // ping -> pong
    var msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    var frames = Array.isArray(msg) ? msg : [msg];
    for (var i = 0; i < frames.length; i++) this._onFrame(frames[i]);
  };

  SC.prototype._onFrame = function (f) {
    if (!f || typeof f !== 'object') return;
    if (typeof f.rid === 'number') {
      if (f.rid === 1 && this.state === 'connecting') {
        this.id = f.data && f.data.id;
        this.state = 'open';
        this.delay = 500;
        this._emit('state', this.state);
        var self = this;
        Object.keys(this.channels).forEach(function (c) { self._subscribe(c); });
        return;
      }
      var p = this.pending[f.rid];
      if (!p) return;
      delete this.pending[f.rid];
      if (f.error) p.reject(f.error); else p.resolve(f.data);
      return;
    }
    if (f.event === '#publish' && f.data) {
      var handler = this.channels[f.data.channel];
      if (handler) handler(f.data.data);
    } else if (f.event === '#kickOut' && f.data) {
      delete this.channels[f.data.channel];
    }
  };

  SC.prototype.invoke = function (event, data) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (self.state !== 'open') { reject(new Error('not connected')); return; }
      var cid = self.cid++;
      self.pending[cid] = {resolve: resolve, reject: reject};
      self.ws.send(JSON.stringify({event: event, data: data, cid: cid}));
    });
  };

  SC.prototype._subscribe = function (channel) {
    return this.invoke('#subscribe', {channel: channel});
  };

  SC.prototype.subscribe = function (channel, handler) {
    this.channels[channel] = handler;
    return this._subscribe(channel);
  };

  SC.prototype.unsubscribe = function (channel) {
    delete this.channels[channel];
    if (this.state === 'open') this.ws.send(JSON.stringify({event: '#unsubscribe', data: channel}));
  };

  SC.prototype.publish = function (channel, data) {
    return this.invoke('#publish', {channel: channel, data: data});
  };

  global.SC = SC;
})(window);
