package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/pkg/codec"
)

// conn is what a scenario needs of a connection; the SocketCluster client
// and the Centrifugo adapter both provide it.
type conn interface {
	Subscribe(ctx context.Context, channel string, handler func(channel string, data json.RawMessage)) error
	SubscribeAsync(channel string, handler func(channel string, data json.RawMessage), done func(error))
	Unsubscribe(channel string) error
	PublishAsync(channel string, data json.RawMessage, done func(error))
	// ReceivedAt is when the message being handled was read (inside a
	// channel handler: the publication's arrival).
	ReceivedAt() time.Time
	Close()
}

// cfConn speaks Centrifugo's JSON client protocol (v6): commands with ids,
// replies with the same id, pushes for publications, an empty object as
// ping and pong. With batch, commands queued together go out
// newline-separated in one frame, as Centrifugo accepts (the way our
// SocketCluster client batches when asked); without, one command per
// frame, as its official clients send them.
type cfConn struct {
	ws     *websocket.Conn
	onDown func()
	batch  bool

	mu       sync.Mutex
	nextID   int
	calls    map[int]func(error)
	handlers map[string]func(string, json.RawMessage)
	out      [][]byte
	writing  bool
	closed   bool
	done     chan struct{}

	receivedAt atomic.Int64 // written by the read loop only
}

func dialCentrifugo(ctx context.Context, url string, onDown func(), batch bool) (*cfConn, error) {
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	c := &cfConn{ws: ws, onDown: onDown, batch: batch, calls: map[int]func(error){}, handlers: map[string]func(string, json.RawMessage){}, done: make(chan struct{})}
	go c.readLoop()
	if err := c.call(ctx, "connect", json.RawMessage(`{}`)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *cfConn) send(b []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.out = append(c.out, b)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

func (c *cfConn) writeLoop() {
	for {
		c.mu.Lock()
		out := c.out
		c.out = nil
		if len(out) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		// Centrifugo refuses frames over its message size limit (64 KiB by
		// default): send the queue in chunks well below it.
		for len(out) > 0 {
			n, size := 0, 0
			for n < len(out) && (n == 0 || c.batch && size+len(out[n]) < 32<<10) {
				size += len(out[n]) + 1
				n++
			}
			if err := c.ws.WriteMessage(websocket.TextMessage, bytes.Join(out[:n], []byte("\n"))); err != nil {
				c.ws.Close()
				return
			}
			out = out[n:]
		}
	}
}

// command queues method with params; done gets the reply's error.
func (c *cfConn) command(method string, params json.RawMessage, done func(error)) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	if done != nil {
		c.calls[id] = done
	}
	c.mu.Unlock()
	c.send([]byte(`{"id":` + strconv.Itoa(id) + `,"` + method + `":` + string(params) + `}`))
}

func (c *cfConn) call(ctx context.Context, method string, params json.RawMessage) error {
	res := make(chan error, 1)
	c.command(method, params, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("centrifugo: " + method + " timed out")
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func (c *cfConn) Subscribe(ctx context.Context, channel string, handler func(string, json.RawMessage)) error {
	c.mu.Lock()
	c.handlers[channel] = handler
	c.mu.Unlock()
	return c.call(ctx, "subscribe", json.RawMessage(`{"channel":`+quote(channel)+`}`))
}

// SubscribeAsync implements conn.
func (c *cfConn) SubscribeAsync(channel string, handler func(string, json.RawMessage), done func(error)) {
	c.mu.Lock()
	c.handlers[channel] = handler
	c.mu.Unlock()
	c.command("subscribe", json.RawMessage(`{"channel":`+quote(channel)+`}`), done)
}

func (c *cfConn) Unsubscribe(channel string) error {
	c.mu.Lock()
	delete(c.handlers, channel)
	c.mu.Unlock()
	c.command("unsubscribe", json.RawMessage(`{"channel":`+quote(channel)+`}`), nil)
	return nil
}

func (c *cfConn) PublishAsync(channel string, data json.RawMessage, done func(error)) {
	c.command("publish", json.RawMessage(`{"channel":`+quote(channel)+`,"data":`+string(data)+`}`), done)
}

func (c *cfConn) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.ws.Close()
	<-c.done
}

// ReceivedAt implements conn.
func (c *cfConn) ReceivedAt() time.Time { return time.Unix(0, c.receivedAt.Load()) }

func (c *cfConn) readLoop() {
	defer close(c.done)
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			calls := c.calls
			c.calls = map[int]func(error){}
			closed := c.closed
			c.mu.Unlock()
			for _, done := range calls {
				done(err)
			}
			if !closed && c.onDown != nil {
				c.onDown()
			}
			return
		}
		c.receivedAt.Store(time.Now().UnixNano())
		for line := range bytes.SplitSeq(msg, []byte("\n")) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if string(line) == "{}" { // ping
				c.send([]byte("{}"))
				continue
			}
			// Replies are read with the same scanner as SocketCluster
			// frames, so both protocols cost the tool alike.
			if !codec.Valid(line) {
				continue
			}
			if push, ok := codec.Field(line, "push"); ok {
				ch, _ := codec.String(codec.Get(push, "channel"))
				data, ok := codec.Field(codec.Get(push, "pub"), "data")
				c.mu.Lock()
				h := c.handlers[ch]
				c.mu.Unlock()
				if h != nil && ok {
					h(ch, data)
				}
				continue
			}
			id, _ := codec.Int(codec.Get(line, "id"))
			errMsg, failed := codec.Field(line, "error")
			if id != 0 {
				c.mu.Lock()
				done := c.calls[int(id)]
				delete(c.calls, int(id))
				c.mu.Unlock()
				if done != nil {
					if failed {
						m, _ := codec.String(codec.Get(errMsg, "message"))
						done(errors.New("centrifugo: " + m))
					} else {
						done(nil)
					}
				}
			}
		}
	}
}
