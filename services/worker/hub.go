package worker

import (
	"encoding/json"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/scc-k8s/scc/pkg/codec"
)

const hubShards = 64

// hub is the worker's local subscription registry: for each channel, the
// sockets and exchange handlers subscribed here, and whether the upstream
// (broker) subscription is confirmed. The first local subscriber of a
// channel subscribes upstream, the last one to leave unsubscribes.
//
// Broker operations for a channel are issued while holding its shard's
// lock, so they reach the broker in the order the hub decided them.
// Subscriber lists are copy-on-write: deliver reads a snapshot and never
// holds a lock while enqueueing or calling handlers.
type hub struct {
	seed    maphash.Seed
	shards  [hubShards]hubShard
	broker  Broker
	metrics *metrics
}

type hubShard struct {
	mu       sync.RWMutex
	channels map[string]*channelState
	dels     int // deletions from channels since it was last copied
}

// drop deletes channel ch from the shard (locked).
func (sh *hubShard) drop(ch string) {
	delete(sh.channels, ch)
	sh.channels = compacted(sh.channels, &sh.dels)
}

type channelState struct {
	active  bool        // upstream subscription confirmed
	socks   []*Socket   // copy-on-write
	exch    []*exchSub  // copy-on-write
	waiters []subWaiter // subscribers waiting for upstream confirmation
}

type subWaiter struct {
	sock *Socket
	exch *exchSub
	done func(error)
}

type exchSub struct {
	channel string
	handler func(channel string, data json.RawMessage)
}

func newHub(m *metrics) *hub {
	h := &hub{seed: maphash.MakeSeed(), metrics: m}
	for i := range h.shards {
		h.shards[i].channels = make(map[string]*channelState)
	}
	return h
}

func (h *hub) shard(ch string) *hubShard {
	return &h.shards[maphash.String(h.seed, ch)%hubShards]
}

// subscribe adds sock (or x) to channel and calls done once the channel's
// upstream subscription is confirmed (at once when it already is).
func (h *hub) subscribe(ch string, sock *Socket, x *exchSub, done func(error)) {
	sh := h.shard(ch)
	sh.mu.Lock()
	e := sh.channels[ch]
	if e != nil && e.active {
		e.add(sock, x)
		sh.mu.Unlock()
		done(nil)
		return
	}
	if e != nil { // upstream pending
		e.waiters = append(e.waiters, subWaiter{sock, x, done})
		sh.mu.Unlock()
		return
	}
	e = &channelState{waiters: []subWaiter{{sock, x, done}}}
	sh.channels[ch] = e
	h.metrics.channels.Inc()
	// A broker may confirm synchronously, inside Subscribe, while we hold
	// the lock; record that and finish below instead of re-locking.
	p := &pendingSub{}
	h.broker.Subscribe(ch, func(err error) {
		p.err = err // published by the CAS: read below only once it failed there
		if p.state.CompareAndSwap(0, 2) {
			return
		}
		h.upstreamDone(ch, e, err)
	})
	if p.state.CompareAndSwap(0, 1) {
		sh.mu.Unlock()
		return
	}
	err := p.err
	notify := h.finishLocked(sh, ch, e, err)
	sh.mu.Unlock()
	for _, w := range notify {
		w.done(err)
	}
}

// pendingSub is one upstream subscribe in flight: state is 0 while
// Subscribe runs, 1 once it returned first, 2 when the broker answered
// inside it (err is then its answer).
type pendingSub struct {
	state atomic.Int32
	err   error
}

func (h *hub) upstreamDone(ch string, e *channelState, err error) {
	sh := h.shard(ch)
	sh.mu.Lock()
	notify := h.finishLocked(sh, ch, e, err)
	sh.mu.Unlock()
	for _, w := range notify {
		w.done(err)
	}
}

// finishLocked settles a pending upstream subscription and returns the
// waiters to notify (outside the lock).
func (h *hub) finishLocked(sh *hubShard, ch string, e *channelState, err error) []subWaiter {
	waiters := e.waiters
	e.waiters = nil
	if sh.channels[ch] != e {
		return waiters // replaced meanwhile; nothing to activate
	}
	if err != nil {
		if len(e.socks) == 0 && len(e.exch) == 0 {
			sh.drop(ch)
			h.metrics.channels.Dec()
		}
		return waiters
	}
	e.active = true
	for _, w := range waiters {
		e.add(w.sock, w.exch)
	}
	if len(e.socks) == 0 && len(e.exch) == 0 { // everyone left while pending
		sh.drop(ch)
		h.metrics.channels.Dec()
		h.broker.Unsubscribe(ch)
	}
	return waiters
}

// unsubscribe removes sock (or x) from channel, dropping the upstream
// subscription when nobody local is left.
func (h *hub) unsubscribe(ch string, sock *Socket, x *exchSub) {
	sh := h.shard(ch)
	sh.mu.Lock()
	e := sh.channels[ch]
	if e == nil {
		sh.mu.Unlock()
		return
	}
	e.remove(sock, x)
	// A subscribe still waiting for its broker gets its answer now: as far
	// as its client knows it succeeded, and this unsubscribe follows it.
	var answered []subWaiter
	kept := e.waiters[:0:0]
	for _, w := range e.waiters {
		if (sock != nil && w.sock == sock) || (x != nil && w.exch == x) {
			answered = append(answered, w)
		} else {
			kept = append(kept, w)
		}
	}
	if len(answered) > 0 {
		e.waiters = kept
	}
	if e.active && len(e.socks) == 0 && len(e.exch) == 0 {
		sh.drop(ch)
		h.metrics.channels.Dec()
		h.broker.Unsubscribe(ch)
	}
	sh.mu.Unlock()
	for _, w := range answered {
		w.done(nil)
	}
}

// deliver hands one channel message to every local subscriber. The frame
// is encoded once and its bytes shared by every socket that has no
// outbound middleware changing them.
func (h *hub) deliver(srv *Server, ch string, data json.RawMessage) {
	sh := h.shard(ch)
	sh.mu.RLock()
	e := sh.channels[ch]
	if e == nil {
		sh.mu.RUnlock()
		return
	}
	socks, exch := e.socks, e.exch
	if !e.active {
		// The broker sends a channel's messages once it has our
		// subscription, which may be before its confirmation reaches us:
		// the subscribers waiting for it get them (clients accept
		// messages on a channel whose subscribe is pending).
		for _, w := range e.waiters {
			switch {
			case w.sock != nil && !slices.Contains(socks, w.sock):
				socks = append(socks[:len(socks):len(socks)], w.sock)
			case w.exch != nil && !slices.Contains(exch, w.exch):
				exch = append(exch[:len(exch):len(exch)], w.exch)
			}
		}
	}
	sh.mu.RUnlock()
	if len(socks) > 0 {
		frame := codec.AppendPublish(make([]byte, 0, len(ch)+len(data)+48), ch, data)
		for _, s := range socks {
			s.deliver(frame, ch, data)
		}
	}
	for _, x := range exch {
		x.call(srv, ch, data)
	}
}

func (e *channelState) add(sock *Socket, x *exchSub) {
	if sock != nil {
		for _, s := range e.socks {
			if s == sock {
				return
			}
		}
		n := make([]*Socket, len(e.socks)+1)
		copy(n, e.socks)
		n[len(e.socks)] = sock
		e.socks = n
	}
	if x != nil {
		n := make([]*exchSub, len(e.exch)+1)
		copy(n, e.exch)
		n[len(e.exch)] = x
		e.exch = n
	}
}

func (e *channelState) remove(sock *Socket, x *exchSub) {
	if sock != nil {
		for i, s := range e.socks {
			if s == sock {
				n := make([]*Socket, 0, len(e.socks)-1)
				n = append(n, e.socks[:i]...)
				e.socks = append(n, e.socks[i+1:]...)
				break
			}
		}
	}
	if x != nil {
		for i, s := range e.exch {
			if s == x {
				n := make([]*exchSub, 0, len(e.exch)-1)
				n = append(n, e.exch[:i]...)
				e.exch = append(n, e.exch[i+1:]...)
				break
			}
		}
	}
}

// channelCount returns how many channels have local subscribers.
func (h *hub) channelCount() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		n += len(sh.channels)
		sh.mu.RUnlock()
	}
	return n
}

// call runs a server-side subscription's handler; a panic in it is logged
// and counted, and the other subscribers still get the message.
func (x *exchSub) call(srv *Server, ch string, data json.RawMessage) {
	defer func() {
		if v := recover(); v != nil {
			srv.panicked("exchange handler", nil, v)
		}
	}()
	x.handler(ch, data)
}
