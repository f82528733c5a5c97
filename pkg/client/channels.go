package client

// Channels: subscribing (again after every reconnect), unsubscribing and
// publishing.

import (
	"context"
	"encoding/json"

	"github.com/scc-k8s/scc/pkg/codec"
)

type channel struct {
	name    string
	handler func(channel string, data json.RawMessage)
	active  bool
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
