package client

// Events to the server: raw messages, transmits, invokes with their
// acknowledgements and timeouts, and authentication.

import (
	"context"
	"encoding/json"
	"time"

	"github.com/scc-k8s/scc/pkg/codec"
)

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

func marshalData(data any) (json.RawMessage, error) {
	if data == nil {
		return nil, nil
	}
	return codec.Marshal(data)
}
