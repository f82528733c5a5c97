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
