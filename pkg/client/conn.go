package client

// The connection's life: dialling and the handshake, going up and down
// (with reconnection), and the loops that read and write its frames.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/pkg/codec"
)

func (c *Client) url() string {
	urls := c.opts.URLs
	if c.opts.URL != "" {
		urls = append([]string{c.opts.URL}, urls...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(urls) == 0 {
		return ""
	}
	return urls[c.urlIdx%len(urls)]
}

func (c *Client) nextURL() {
	c.mu.Lock()
	c.urlIdx++
	c.mu.Unlock()
}

func (c *Client) dial(ctx context.Context) (*websocket.Conn, Status, error) {
	url := c.url()
	conn, resp, err := c.opts.Dialer.DialContext(ctx, url, c.opts.Header)
	if err != nil {
		c.nextURL()
		if resp != nil {
			return nil, Status{}, fmt.Errorf("client: dial %s: %w (HTTP %d)", url, err, resp.StatusCode)
		}
		return nil, Status{}, fmt.Errorf("client: dial %s: %w", url, err)
	}
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	var tokRaw json.RawMessage = json.RawMessage("null")
	if tok != "" {
		tokRaw = codec.AppendString(nil, tok)
	}
	body := append(append([]byte(`{"authToken":`), tokRaw...), '}')
	if err := conn.WriteMessage(websocket.TextMessage, codec.AppendEvent(nil, "#handshake", body, 1)); err != nil {
		conn.Close()
		return nil, Status{}, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.opts.AckTimeout)
	}
	_ = conn.SetReadDeadline(deadline)
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return nil, Status{}, &CloseError{Code: ce.Code, Reason: ce.Text}
			}
			return nil, Status{}, fmt.Errorf("client: handshake: %w", err)
		}
		frames, _, raw := codec.Decode(msg, nil)
		if raw {
			continue
		}
		for i := range frames {
			f := &frames[i]
			if f.HasEvent {
				c.handleEvent(f) // e.g. #removeAuthToken before the response (v1)
				continue
			}
			if rid, ok := codec.Int(f.RID); !ok || rid != 1 {
				continue
			}
			if e := codec.ParseError(f.Error); e != nil {
				conn.Close()
				return nil, Status{}, e
			}
			var st Status
			_ = json.Unmarshal(f.Data, &st)
			if ae, ok := codec.Field(f.Data, "authError"); ok {
				st.AuthError = codec.ParseError(ae)
			}
			_ = conn.SetReadDeadline(time.Time{})
			return conn, st, nil
		}
	}
}

func (c *Client) run(conn *websocket.Conn, st Status) {
	defer c.runWG.Done()
	attempt := 0
	for {
		ce := c.readLoop(conn, st)
		c.down(ce)
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed || c.opts.NoReconnect || ce.Code == 1000 || ce.Code >= 4500 {
			return
		}
		delay := time.Duration(0)
		if ce.Code != 4000 && ce.Code != 4001 && ce.Code != 1005 || attempt > 0 {
			d := float64(c.opts.ReconnectDelay) * (1 + rand.Float64())
			for range attempt {
				d *= 1.5
			}
			delay = min(time.Duration(d), c.opts.ReconnectMaxDelay)
		}
		for {
			select {
			case <-c.done:
				return
			case <-time.After(delay):
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.AckTimeout)
			var err error
			conn, st, err = c.dial(ctx)
			cancel()
			attempt++
			if err == nil {
				c.Reconnects.Add(1)
				attempt = 0
				c.up(conn, st)
				break
			}
			d := float64(c.opts.ReconnectDelay) * (1 + rand.Float64())
			for range min(attempt, 20) {
				d *= 1.5
			}
			delay = min(time.Duration(d), c.opts.ReconnectMaxDelay)
		}
	}
}

func (c *Client) up(conn *websocket.Conn, st Status) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close() // the reader stops at once
		return
	}
	c.conn = conn
	c.status = st
	c.nextCID = 1 // the handshake was cid 1
	if st.AuthError != nil && !st.IsAuthenticated {
		c.token = ""
	}
	chans := make([]*channel, 0, len(c.channels))
	for _, ch := range c.channels {
		ch.active = false
		chans = append(chans, ch)
	}
	onConnect := c.onConnect
	close(c.connected)
	c.mu.Unlock()
	// Subscribe again to every channel (the server forgot them).
	for _, ch := range chans {
		name := ch.name
		c.invokeAsync("#subscribe", subscribeData(name), func(_ json.RawMessage, err error) {
			if err == nil {
				c.mu.Lock()
				cur := c.channels[name]
				if cur != nil {
					cur.active = true
				}
				fn := c.onSubscribed
				c.mu.Unlock()
				if cur != nil && fn != nil {
					fn(name)
				}
			}
		})
	}
	if onConnect != nil {
		onConnect(st)
	}
}

func (c *Client) down(ce *CloseError) {
	c.mu.Lock()
	c.conn = nil
	c.lastClose = ce
	c.connected = make(chan struct{})
	calls := c.calls
	c.calls = make(map[int64]*call)
	onDisconnect := c.onDisconnect
	c.mu.Unlock()
	c.outMu.Lock()
	c.out = nil
	c.outMu.Unlock()
	for _, cl := range calls {
		cl.done(nil, codec.NewError(codec.BadConnectionError, "connection lost"))
	}
	if onDisconnect != nil {
		onDisconnect(ce)
	}
}

func (c *Client) readLoop(conn *websocket.Conn, st Status) *CloseError {
	pingTimeout := time.Duration(st.PingTimeout) * time.Millisecond
	if pingTimeout <= 0 {
		pingTimeout = 30 * time.Second
	}
	ping, pong := "", ""
	if c.opts.ProtocolVersion == 1 {
		ping, pong = "#1", "#2"
	}
	var frames []codec.Frame
	var scratch []byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(pingTimeout + time.Second))
		msg, err := readMessage(conn, &scratch)
		if err != nil {
			conn.Close()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return &CloseError{Code: ce.Code, Reason: ce.Text}
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return &CloseError{Code: 4000, Reason: "server ping timed out"}
			}
			return &CloseError{Code: 1006, Reason: err.Error()}
		}
		c.receivedAt.Store(time.Now().UnixNano())
		if string(msg) == ping {
			_ = c.write(conn, []byte(pong))
			continue
		}
		var raw bool
		frames, _, raw = codec.Decode(msg, frames[:0])
		if raw {
			continue
		}
		for i := range frames {
			f := &frames[i]
			switch {
			case f.HasEvent:
				c.handleEvent(f)
			case f.RID != nil:
				c.handleResponse(f)
			}
		}
	}
}

func (c *Client) handleResponse(f *codec.Frame) {
	rid, _ := codec.Int(f.RID)
	c.mu.Lock()
	cl := c.calls[rid]
	delete(c.calls, rid)
	c.mu.Unlock()
	if cl == nil {
		return
	}
	if e := codec.ParseError(f.Error); e != nil {
		cl.done(f.Data, e)
		return
	}
	cl.done(f.Data, nil)
}

func (c *Client) handleEvent(f *codec.Frame) {
	switch f.Event {
	case "#publish":
		raw, data := codec.PublishFields(f.Data)
		var ch *channel
		c.mu.Lock()
		if body, ok := codec.Plain(raw); ok {
			ch = c.channels[string(body)] // no allocation for the lookup
		} else if name, ok := codec.String(raw); ok {
			ch = c.channels[name]
		}
		c.mu.Unlock()
		if ch != nil {
			ch.handler(ch.name, data)
		}
		return
	case "#kickOut":
		name, _ := codec.String(codec.Get(f.Data, "channel"))
		msg, _ := codec.Field(f.Data, "message")
		c.mu.Lock()
		delete(c.channels, name)
		fn := c.onKickOut
		c.mu.Unlock()
		if fn != nil {
			fn(name, msg)
		}
		return
	case "#setAuthToken":
		tok, _ := codec.String(codec.Get(f.Data, "token"))
		c.mu.Lock()
		c.token = tok
		fn := c.onAuthToken
		c.mu.Unlock()
		if f.CID != nil {
			c.respond(f.CID, nil, nil)
		}
		if fn != nil {
			fn(tok)
		}
		return
	case "#removeAuthToken":
		c.mu.Lock()
		c.token = ""
		fn := c.onAuthToken
		c.mu.Unlock()
		if f.CID != nil {
			c.respond(f.CID, nil, nil)
		}
		if fn != nil {
			fn("")
		}
		return
	}
	c.mu.Lock()
	recv := c.receivers[f.Event]
	proc := c.procs[f.Event]
	c.mu.Unlock()
	if f.CID != nil {
		if proc == nil {
			return
		}
		res, err := proc(f.Data)
		var data json.RawMessage
		if err == nil && res != nil {
			data, err = codec.Marshal(res)
		}
		c.respond(f.CID, data, err)
		return
	}
	if recv != nil {
		recv(f.Data)
	}
}

// ReceivedAt is when the message whose frames are being handled was read
// from the connection: inside a channel handler, the arrival time of the
// publication (a batch's frames share it).
func (c *Client) ReceivedAt() time.Time {
	return time.Unix(0, c.receivedAt.Load())
}

// readMessage reads one message through a scratch buffer kept across
// reads and returns it in one allocation of its exact size (handlers may
// keep what they are given); ReadMessage would grow it step by step.
func readMessage(conn *websocket.Conn, scratch *[]byte) ([]byte, error) {
	_, r, err := conn.NextReader()
	if err != nil {
		return nil, err
	}
	b := (*scratch)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if cap(b) <= 1<<20 {
		*scratch = b
	}
	return append([]byte(nil), b...), nil
}

func (c *Client) respond(cid json.RawMessage, data json.RawMessage, err error) {
	var b []byte
	if err != nil {
		b = codec.AppendErrorResponse(nil, cid, err)
	} else {
		b = codec.AppendResponse(nil, cid, data)
	}
	_ = c.send(b)
}

func (c *Client) write(conn *websocket.Conn, b []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return conn.WriteMessage(websocket.TextMessage, b)
}

// send queues one frame for the writer, which sends what accumulated
// together, as one JSON array (a batch) when there are several.
func (c *Client) send(b []byte) error {
	c.mu.Lock()
	conn := c.conn
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if conn == nil {
		return codec.NewError(codec.BadConnectionError, "not connected")
	}
	c.outMu.Lock()
	c.out = append(c.out, b)
	start := !c.writing
	c.writing = true
	c.outMu.Unlock()
	if start {
		go c.writeLoop(conn)
	}
	return nil
}

const maxBatchBytes = 64 << 10

func (c *Client) writeLoop(conn *websocket.Conn) {
	var buf []byte
	for {
		c.outMu.Lock()
		frames := c.out
		c.out = nil
		if len(frames) == 0 {
			c.writing = false
			c.outMu.Unlock()
			return
		}
		c.outMu.Unlock()
		var err error
		for i := 0; err == nil && i < len(frames); {
			if !c.opts.Batch || i == len(frames)-1 || len(frames[i]) >= maxBatchBytes {
				err = c.write(conn, frames[i])
				i++
				continue
			}
			buf = append(buf[:0], '[')
			j := i
			for ; j < len(frames) && (j == i || len(buf)+len(frames[j]) < maxBatchBytes); j++ {
				if j > i {
					buf = append(buf, ',')
				}
				buf = append(buf, frames[j]...)
			}
			err = c.write(conn, append(buf, ']'))
			i = j
		}
		if err != nil {
			conn.Close() // the reader notices and reconnects
			c.outMu.Lock()
			c.out, c.writing = nil, false
			c.outMu.Unlock()
			return
		}
	}
}
