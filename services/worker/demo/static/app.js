(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  var sc = new SC(scheme + location.host + '/socketcluster/');
  var current = null;

  $('name').value = 'guest-' + Math.floor(Math.random() * 9000 + 1000);

  function line(html, cls) {
    var li = document.createElement('li');
    if (cls) li.className = cls;
    li.innerHTML = html;
    $('log').appendChild(li);
    $('log').scrollTop = $('log').scrollHeight;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }

  sc.on('state', function (st) {
    var el = $('status');
    el.className = 'status ' + (st === 'open' ? 'connected' : st);
    el.textContent = st === 'open' ? 'connected' : st;
    $('sid').textContent = st === 'open' ? sc.id : '-';
    if (st === 'open' && !current) join();
  });

  function join() {
    var ch = $('channel').value.trim() || 'lobby';
    if (current === ch) return;
    if (current) sc.unsubscribe(current);
    current = ch;
    sc.subscribe(ch, function (msg) {
      if (!msg || typeof msg !== 'object') return;
      line('<b>' + esc(msg.from) + '</b>' + esc(msg.text), 'msg');
    }).then(function () {
      line('joined #' + esc(ch), 'system');
      document.body.dataset.joined = ch;
    }, function (err) {
      line('could not join #' + esc(ch) + ': ' + esc(err && err.message), 'system');
    });
  }

  $('join').onclick = join;
  $('form').onsubmit = function (ev) {
    ev.preventDefault();
    var text = $('text').value.trim();
    if (!text || !current) return;
    sc.publish(current, {from: $('name').value, text: text}).then(function () {
      $('text').value = '';
    }, function (err) {
      line('not sent: ' + esc(err && err.message), 'system');
    });
  };
})();
