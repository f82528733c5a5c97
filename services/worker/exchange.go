package worker

import (
	"context"
	"encoding/json"

	"github.com/scc-k8s/scc/pkg/codec"
)

// Exchange publishes to channels and subscribes to them from the server
// side. Server-side publishes skip inbound middleware; server-side
// subscriptions count as local subscribers, so they receive messages
// published anywhere in the cluster.
type Exchange struct {
	srv *Server
}

// Publish sends data (any JSON-encodable value; a json.RawMessage is sent
// as is) to every subscriber of channel and waits for the broker's
// acknowledgement or ctx.
func (x *Exchange) Publish(ctx context.Context, channel string, data any) error {
	raw, err := codec.Marshal(data)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	x.srv.publish(channel, raw, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync sends data without waiting; done (may be nil) receives the
// broker's acknowledgement on some goroutine.
func (x *Exchange) PublishAsync(channel string, data json.RawMessage, done func(error)) {
	x.srv.publish(channel, data, done)
}

// Subscription is a server-side channel subscription.
type Subscription struct {
	x   *Exchange
	sub *exchSub
}

// Subscribe calls handler for every message on channel until Unsubscribe.
// It returns once the broker has confirmed the subscription (or ctx ends).
// handler runs on the delivering goroutine and must not block.
func (x *Exchange) Subscribe(ctx context.Context, channel string, handler func(channel string, data json.RawMessage)) (*Subscription, error) {
	sub := &exchSub{channel: channel, handler: handler}
	done := make(chan error, 1)
	x.srv.hub.subscribe(channel, nil, sub, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
		return &Subscription{x: x, sub: sub}, nil
	case <-ctx.Done():
		x.srv.hub.unsubscribe(channel, nil, sub)
		return nil, ctx.Err()
	}
}

// Channel is the subscription's channel.
func (s *Subscription) Channel() string { return s.sub.channel }

// Unsubscribe stops the subscription.
func (s *Subscription) Unsubscribe() { s.x.srv.hub.unsubscribe(s.sub.channel, nil, s.sub) }
