package worker

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
)

// DeliverFunc receives every message the broker routes to this worker for a
// channel it subscribed to. It must not block for long: the worker enqueues
// the message for its local subscribers and returns.
type DeliverFunc func(channel string, data json.RawMessage)

// Broker is the worker's connection to channel routing: one in-process
// implementation (LocalBroker) and one over gRPC to the cluster's brokers.
// The worker calls Subscribe for the first local subscriber of a channel and
// Unsubscribe when the last one leaves, and Publish for every publish.
//
// Completion callbacks may run on any goroutine, possibly before the method
// returns, and must not block. For any one channel, operations take effect
// in the order they were called.
type Broker interface {
	// Subscribe asks for the channel's messages; done reports when the
	// subscription is confirmed (messages published after that arrive).
	Subscribe(channel string, done func(error))
	// Unsubscribe drops the subscription.
	Unsubscribe(channel string)
	// Publish routes data to every subscriber of channel; done reports the
	// broker's acknowledgement. done may be nil.
	Publish(channel string, data json.RawMessage, done func(error))
	// Close releases the connection; later calls fail with ErrBrokerClosed.
	Close() error
}

// BrokerFactory connects a server to a broker: the broker hands every
// message for this server's channels to deliver.
type BrokerFactory func(deliver DeliverFunc) (Broker, error)

// ErrBrokerClosed is the error of operations on a closed broker connection.
var ErrBrokerClosed = errors.New("worker: broker connection closed")

// LocalBroker routes messages between the servers of one process. Attach
// each server to it (its Attach method is a BrokerFactory).
type LocalBroker struct {
	mu   sync.RWMutex
	subs map[string][]*localConn // copy-on-write: Publish reads a snapshot
	dels int                     // deletions from subs since it was last copied
}

var _ Broker = (*localConn)(nil)

// NewLocalBroker returns an empty in-process broker.
func NewLocalBroker() *LocalBroker {
	return &LocalBroker{subs: make(map[string][]*localConn)}
}

// Attach connects one server. It never fails.
func (b *LocalBroker) Attach(deliver DeliverFunc) (Broker, error) {
	return &localConn{b: b, deliver: deliver}, nil
}

type localConn struct {
	b       *LocalBroker
	deliver DeliverFunc
	mu      sync.Mutex
	closed  bool
	chans   map[string]struct{}
	dels    int // deletions from chans since it was last copied
}

func (c *localConn) Subscribe(channel string, done func(error)) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		done(ErrBrokerClosed)
		return
	}
	if c.chans == nil {
		c.chans = make(map[string]struct{})
	}
	c.chans[channel] = struct{}{}
	c.mu.Unlock()
	c.b.mu.Lock()
	if subs := c.b.subs[channel]; !slices.Contains(subs, c) {
		c.b.subs[channel] = append(subs[:len(subs):len(subs)], c)
	}
	c.b.mu.Unlock()
	done(nil)
}

func (c *localConn) Unsubscribe(channel string) {
	c.mu.Lock()
	delete(c.chans, channel)
	c.chans = compacted(c.chans, &c.dels)
	c.mu.Unlock()
	c.b.remove(channel, c)
}

func (b *LocalBroker) remove(channel string, c *localConn) {
	b.mu.Lock()
	if subs := b.subs[channel]; slices.Contains(subs, c) {
		if len(subs) == 1 {
			delete(b.subs, channel)
			b.subs = compacted(b.subs, &b.dels)
		} else {
			b.subs[channel] = slices.DeleteFunc(slices.Clone(subs), func(x *localConn) bool { return x == c })
		}
	}
	b.mu.Unlock()
}

func (c *localConn) Publish(channel string, data json.RawMessage, done func(error)) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		if done != nil {
			done(ErrBrokerClosed)
		}
		return
	}
	// Deliver outside the lock (a subscriber may publish from its
	// handler), from the snapshot the copy-on-write slice is.
	c.b.mu.RLock()
	targets := c.b.subs[channel]
	c.b.mu.RUnlock()
	for _, sub := range targets {
		sub.deliver(channel, data)
	}
	if done != nil {
		done(nil)
	}
}

func (c *localConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	chans := c.chans
	c.chans = nil
	c.mu.Unlock()
	for ch := range chans {
		c.b.remove(ch, c)
	}
	return nil
}
