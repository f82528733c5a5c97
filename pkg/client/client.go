// Package client is a SocketCluster client in Go: handshake, invoke and
// transmit, channel subscribe and publish, JWT authentication, and
// automatic reconnection that subscribes again to every channel. It speaks
// protocol versions 1 and 2 and works against any SocketCluster server.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/pkg/codec"
)

// ErrClosed is returned by operations on a client closed with Close.
var ErrClosed = errors.New("client: closed")

// Options configures a Client. Zero values mean the defaults stated.
type Options struct {
	// URL is the server endpoint, e.g. ws://localhost:8000/socketcluster/.
	URL string
	// URLs, when set, are tried in turn (from URL, if set): each reconnect
	// moves to the next, so a client follows its servers when one goes.
	URLs []string
	// ProtocolVersion is 1 or 2 (default 2).
	ProtocolVersion int
	// AuthToken is sent in the handshake (updated by #setAuthToken).
	AuthToken string
	// AckTimeout bounds invokes whose context has no deadline (default 10s).
	AckTimeout time.Duration
	// NoReconnect disables automatic reconnection.
	NoReconnect bool
	// ReconnectDelay is the first backoff delay (default 500ms, plus up to
	// as much again at random); each further attempt multiplies it by 1.5,
	// up to ReconnectMaxDelay (default 30s). Close codes 4000, 4001 and
	// 1005 reconnect at once; 1000 and codes from 4500 never reconnect.
	ReconnectDelay    time.Duration
	ReconnectMaxDelay time.Duration
	// Header is sent with the upgrade request (e.g. Origin).
	Header http.Header
	// Dialer dials the WebSocket (default websocket.DefaultDialer).
	Dialer *websocket.Dialer
	// Batch sends the frames queued while a write was under way as one
	// JSON array in one WebSocket message, which SocketCluster servers
	// accept and the official clients do only when asked to
	// (startBatching). Default false: one frame per message, as the
	// official client sends them.
	Batch bool
}

// Status is the server's handshake answer.
type Status struct {
	ID              string       `json:"id"`
	PingTimeout     int          `json:"pingTimeout"`
	IsAuthenticated bool         `json:"isAuthenticated"`
	AuthError       *codec.Error `json:"-"`
}

// CloseError tells why a connection ended.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: closed with %d %s", e.Code, e.Reason)
}

// Client is a SocketCluster client connection that reconnects on its own.
type Client struct {
	opts Options

	// receivedAt is when the message being dispatched was read (unix
	// nanos); only the read loop writes it.
	receivedAt atomic.Int64

	mu        sync.Mutex
	conn      *websocket.Conn
	connected chan struct{} // closed while a handshaken connection is up
	status    Status
	token     string
	nextCID   int64
	calls     map[int64]*call
	sweeping  bool // a goroutine expires calls while any are pending
	channels  map[string]*channel
	receivers map[string]func(json.RawMessage)
	procs     map[string]func(json.RawMessage) (any, error)
	closed    bool
	lastClose *CloseError

	onConnect    func(Status)
	onDisconnect func(*CloseError)
	onKickOut    func(channel string, message json.RawMessage)
	onAuthToken  func(token string)
	onSubscribed func(channel string)

	writeMu sync.Mutex
	outMu   sync.Mutex
	out     [][]byte // frames waiting for the writer
	writing bool     // a writer goroutine is draining out
	urlIdx  int
	done    chan struct{}
	runWG   sync.WaitGroup

	Reconnects atomic.Int64
}

type channel struct {
	name    string
	handler func(channel string, data json.RawMessage)
	active  bool
}

type result struct {
	data json.RawMessage
	err  error
}

// call is an invoke awaiting its response.
type call struct {
	event    string
	deadline time.Time
	done     func(json.RawMessage, error)
}

// New returns a client that is not yet connected; call Connect.
func New(opts Options) *Client {
	if opts.ProtocolVersion == 0 {
		opts.ProtocolVersion = 2
	}
	if opts.AckTimeout == 0 {
		opts.AckTimeout = 10 * time.Second
	}
	if opts.ReconnectDelay == 0 {
		opts.ReconnectDelay = 500 * time.Millisecond
	}
	if opts.ReconnectMaxDelay == 0 {
		opts.ReconnectMaxDelay = 30 * time.Second
	}
	if opts.Dialer == nil {
		opts.Dialer = websocket.DefaultDialer
	}
	return &Client{
		opts:      opts,
		token:     opts.AuthToken,
		connected: make(chan struct{}),
		calls:     make(map[int64]*call),
		channels:  make(map[string]*channel),
		receivers: make(map[string]func(json.RawMessage)),
		procs:     make(map[string]func(json.RawMessage) (any, error)),
		done:      make(chan struct{}),
	}
}

// Dial creates a client and connects it (handshake included).
func Dial(ctx context.Context, opts Options) (*Client, error) {
	c := New(opts)
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// OnConnect sets a callback for every completed handshake.
func (c *Client) OnConnect(fn func(Status)) { c.mu.Lock(); c.onConnect = fn; c.mu.Unlock() }

// OnDisconnect sets a callback for every lost connection.
func (c *Client) OnDisconnect(fn func(*CloseError)) { c.mu.Lock(); c.onDisconnect = fn; c.mu.Unlock() }

// OnKickOut sets a callback for #kickOut.
func (c *Client) OnKickOut(fn func(channel string, message json.RawMessage)) {
	c.mu.Lock()
	c.onKickOut = fn
	c.mu.Unlock()
}

// OnSubscribed sets a function called each time the server confirms a
// subscription: the first time, and again after each reconnect (on the
// reader goroutine; it must not block).
func (c *Client) OnSubscribed(fn func(channel string)) {
	c.mu.Lock()
	c.onSubscribed = fn
	c.mu.Unlock()
}

// OnAuthToken sets a callback for tokens the server sets ("" on removal).
func (c *Client) OnAuthToken(fn func(token string)) { c.mu.Lock(); c.onAuthToken = fn; c.mu.Unlock() }

// HandleReceive handles transmits of event from the server.
func (c *Client) HandleReceive(event string, fn func(json.RawMessage)) {
	c.mu.Lock()
	c.receivers[event] = fn
	c.mu.Unlock()
}

// HandleInvoke answers invokes of event from the server.
func (c *Client) HandleInvoke(event string, fn func(json.RawMessage) (any, error)) {
	c.mu.Lock()
	c.procs[event] = fn
	c.mu.Unlock()
}

// Connect connects and handshakes, then keeps the connection up in the
// background (unless NoReconnect) until Close.
func (c *Client) Connect(ctx context.Context) error {
	conn, st, err := c.dial(ctx)
	if err != nil {
		return err
	}
	c.up(conn, st)
	c.runWG.Add(1)
	go c.run(conn, st)
	return nil
}

// Status returns the last handshake status.
func (c *Client) Status() Status { c.mu.Lock(); defer c.mu.Unlock(); return c.status }

// ID returns the socket id the server gave this connection.
func (c *Client) ID() string { return c.Status().ID }

// AuthToken returns the token the client holds.
func (c *Client) AuthToken() string { c.mu.Lock(); defer c.mu.Unlock(); return c.token }

// LastClose returns why the last connection ended, or nil.
func (c *Client) LastClose() *CloseError { c.mu.Lock(); defer c.mu.Unlock(); return c.lastClose }

// WaitConnected blocks until a handshaken connection is up.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	ch := c.connected
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

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

// SendRaw writes msg as one WebSocket text message, untouched (not
// batched with queued frames).
func (c *Client) SendRaw(msg []byte) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return codec.NewError(codec.BadConnectionError, "not connected")
	}
	return c.write(conn, msg)
}

// Transmit sends an event without expecting an answer.
func (c *Client) Transmit(event string, data any) error {
	raw, err := marshalData(data)
	if err != nil {
		return err
	}
	return c.send(codec.AppendEvent(nil, event, raw, 0))
}

// Invoke sends an event and waits for the server's answer.
func (c *Client) Invoke(ctx context.Context, event string, data any) (json.RawMessage, error) {
	raw, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.AckTimeout)
		defer cancel()
	}
	ch := make(chan result, 1)
	cid, err := c.startInvoke(event, raw, func(d json.RawMessage, err error) { ch <- result{d, err} })
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.data, r.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.calls, cid)
		c.mu.Unlock()
		return nil, codec.NewError(codec.TimeoutError, "Event response for "+event+" timed out")
	}
}

// startInvoke registers done for the response and queues the invoke.
func (c *Client) startInvoke(event string, raw json.RawMessage, done func(json.RawMessage, error)) (int64, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrClosed
	}
	if c.conn == nil {
		c.mu.Unlock()
		return 0, codec.NewError(codec.BadConnectionError, "not connected")
	}
	c.nextCID++
	cid := c.nextCID
	c.calls[cid] = &call{event: event, deadline: time.Now().Add(c.opts.AckTimeout), done: done}
	sweep := !c.sweeping
	c.sweeping = true
	c.mu.Unlock()
	if sweep {
		go c.sweep()
	}
	if err := c.send(codec.AppendEvent(nil, event, raw, cid)); err != nil {
		c.mu.Lock()
		delete(c.calls, cid)
		c.mu.Unlock()
		return 0, err
	}
	return cid, nil
}

// sweep fails calls past their deadline; it runs while calls are pending.
func (c *Client) sweep() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			c.mu.Lock()
			c.sweeping = false
			c.mu.Unlock()
			return
		case <-t.C:
		}
		now := time.Now()
		var expired []*call
		c.mu.Lock()
		for cid, cl := range c.calls {
			if now.After(cl.deadline) {
				expired = append(expired, cl)
				delete(c.calls, cid)
			}
		}
		if len(c.calls) == 0 {
			c.sweeping = false
			c.mu.Unlock()
			for _, cl := range expired {
				cl.done(nil, codec.NewError(codec.TimeoutError, "Event response for "+cl.event+" timed out"))
			}
			return
		}
		c.mu.Unlock()
		for _, cl := range expired {
			cl.done(nil, codec.NewError(codec.TimeoutError, "Event response for "+cl.event+" timed out"))
		}
	}
}

// invokeAsync sends an invoke; done gets the answer (on the reader
// goroutine), a timeout, or the send error.
func (c *Client) invokeAsync(event string, raw json.RawMessage, done func(json.RawMessage, error)) {
	if _, err := c.startInvoke(event, raw, done); err != nil {
		done(nil, err)
	}
}

func subscribeData(channel string) json.RawMessage {
	return append(codec.AppendString([]byte(`{"channel":`), channel), '}')
}

// Subscribe subscribes to channel; handler receives each message (on the
// client's reader goroutine: it must not block). The subscription survives
// reconnects.
func (c *Client) Subscribe(ctx context.Context, name string, handler func(channel string, data json.RawMessage)) error {
	ch := c.addChannel(name, handler)
	_, err := c.Invoke(ctx, "#subscribe", subscribeData(name))
	c.settleChannel(ch, err)
	return err
}

// addChannel registers a channel whose subscribe is about to be sent.
func (c *Client) addChannel(name string, handler func(channel string, data json.RawMessage)) *channel {
	ch := &channel{name: name, handler: handler}
	c.mu.Lock()
	c.channels[name] = ch
	c.mu.Unlock()
	return ch
}

// settleChannel applies the server's answer to a subscribe: the channel
// becomes active, or is dropped again (unless it was replaced meanwhile).
func (c *Client) settleChannel(ch *channel, err error) {
	c.mu.Lock()
	fn := c.onSubscribed
	if c.channels[ch.name] == ch {
		if err != nil {
			delete(c.channels, ch.name)
		} else {
			ch.active = true
		}
	}
	c.mu.Unlock()
	if err == nil && fn != nil {
		fn(ch.name)
	}
}

// SubscribeAsync subscribes to channel without waiting: done is called
// with the server's answer (on the reader goroutine; it must not block),
// and the channel is dropped again when the server refuses it.
func (c *Client) SubscribeAsync(name string, handler func(channel string, data json.RawMessage), done func(error)) {
	ch := c.addChannel(name, handler)
	c.invokeAsync("#subscribe", subscribeData(name), func(_ json.RawMessage, err error) {
		c.settleChannel(ch, err)
		done(err)
	})
}

// Unsubscribe leaves channel.
func (c *Client) Unsubscribe(name string) error {
	c.mu.Lock()
	delete(c.channels, name)
	c.mu.Unlock()
	return c.send(codec.AppendEvent(nil, "#unsubscribe", codec.AppendString(nil, name), 0))
}

// Subscriptions lists the channels the client holds.
func (c *Client) Subscriptions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.channels))
	for n := range c.channels {
		out = append(out, n)
	}
	return out
}

func publishData(channel string, data json.RawMessage) json.RawMessage {
	b := codec.AppendString([]byte(`{"channel":`), channel)
	if data != nil {
		b = append(append(b, `,"data":`...), data...)
	}
	return append(b, '}')
}

// Publish publishes data to channel and waits for the server's ack.
func (c *Client) Publish(ctx context.Context, channel string, data any) error {
	raw, err := marshalData(data)
	if err != nil {
		return err
	}
	_, err = c.Invoke(ctx, "#publish", publishData(channel, raw))
	return err
}

// PublishAsync publishes with an ack reported to done (on some goroutine).
func (c *Client) PublishAsync(channel string, data json.RawMessage, done func(error)) {
	c.invokeAsync("#publish", publishData(channel, data), func(_ json.RawMessage, err error) { done(err) })
}

// PublishNoAck publishes without asking for an ack.
func (c *Client) PublishNoAck(channel string, data any) error {
	raw, err := marshalData(data)
	if err != nil {
		return err
	}
	return c.send(codec.AppendEvent(nil, "#publish", publishData(channel, raw), 0))
}

// Authenticate presents a token; the server answers whether it is valid.
func (c *Client) Authenticate(ctx context.Context, token string) error {
	res, err := c.Invoke(ctx, "#authenticate", token)
	if err != nil {
		return err
	}
	var st struct {
		IsAuthenticated bool `json:"isAuthenticated"`
	}
	_ = json.Unmarshal(res, &st)
	if !st.IsAuthenticated {
		if ae, ok := codec.Field(res, "authError"); ok && !codec.IsNull(ae) {
			return codec.ParseError(ae)
		}
		return codec.NewError(codec.AuthErrorName, "not authenticated")
	}
	c.mu.Lock()
	c.token = token
	c.mu.Unlock()
	return nil
}

// Deauthenticate drops the client's token and tells the server.
func (c *Client) Deauthenticate() error {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
	return c.send(codec.AppendEvent(nil, "#removeAuthToken", nil, 0))
}

// Disconnect closes the current connection with code (the client
// reconnects unless code is 1000 or >= 4500 or reconnection is off).
func (c *Client) Disconnect(code int, reason string) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	c.writeMu.Lock()
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	c.writeMu.Unlock()
	go func() {
		time.Sleep(time.Second)
		conn.Close()
	}()
}

// Close closes the connection for good and stops reconnecting.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	conn := c.conn
	close(c.done)
	c.mu.Unlock()
	if conn != nil {
		c.writeMu.Lock()
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		c.writeMu.Unlock()
		conn.Close()
	}
	c.runWG.Wait()
}

func marshalData(data any) (json.RawMessage, error) {
	if data == nil {
		return nil, nil
	}
	return codec.Marshal(data)
}
