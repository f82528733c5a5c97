package worker

// A socket's channel subscriptions and the deliveries it receives.

import (
	"encoding/json"
	"time"

	"github.com/scc-k8s/scc/pkg/codec"
)

// opStart and opDone bracket a subscribe or publish of this socket that
// waits for the broker.
func (s *Socket) opStart(ch string) {
	s.mu.Lock()
	s.opStartLocked(ch)
	s.mu.Unlock()
}

func (s *Socket) opStartLocked(ch string) {
	if s.ops == nil {
		s.ops = make(map[string]int)
	}
	s.ops[ch]++
}

func (s *Socket) opDone(ch string) {
	s.mu.Lock()
	if n := s.ops[ch] - 1; n > 0 {
		s.ops[ch] = n
	} else {
		delete(s.ops, ch)
		s.ops = compacted(s.ops, &s.opDels)
		if s.settled != nil && s.settleCh == ch {
			close(s.settled)
			s.settled = nil
		}
	}
	s.mu.Unlock()
}

// settle waits (on the reader goroutine) until the broker has answered this
// socket's subscribes and publishes on channel, so that an unsubscribe
// right behind them in the same batch finds the subscription confirmed and
// the socket's own publishes delivered, as with an in-process broker. It
// gives up after AckTimeout or when the socket closes.
func (s *Socket) settle(ch string) {
	s.mu.Lock()
	if s.ops[ch] == 0 {
		s.mu.Unlock()
		return
	}
	w := make(chan struct{})
	s.settleCh, s.settled = ch, w
	s.mu.Unlock()
	t := time.NewTimer(s.srv.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-w:
	case <-t.C:
	case <-s.ctx.Done():
	}
	s.mu.Lock()
	if s.settled == w {
		s.settled = nil
	}
	s.mu.Unlock()
}

func (s *Socket) subscribe(ch string, done func(error)) {
	s.mu.Lock()
	if s.state.Load() == stateClosed {
		s.mu.Unlock()
		done(codec.NewError(codec.BadConnectionError, "socket closed"))
		return
	}
	if s.subs == nil {
		s.subs = make(map[string]struct{})
	}
	if _, ok := s.subs[ch]; !ok {
		if limit := s.srv.cfg.SocketChannelLimit; limit > 0 && len(s.subs) >= limit {
			s.mu.Unlock()
			s.reject("channel_limit")
			done(codec.NewError(codec.InvalidActionError,
				"Socket "+s.id+" tried to exceed the channel subscription limit of "+itoa(limit)))
			return
		}
		s.subs[ch] = struct{}{}
		s.srv.metrics.subscriptions.Inc()
	}
	s.opStartLocked(ch) // until the broker answers (opDone)
	s.mu.Unlock()
	s.srv.hub.subscribe(ch, s, nil, func(err error) {
		// The answer is queued before an unsubscribe waiting in settle
		// may run, so the client hears them in that order.
		defer s.opDone(ch)
		if err != nil {
			s.mu.Lock()
			if _, ok := s.subs[ch]; ok {
				delete(s.subs, ch)
				s.subs = compacted(s.subs, &s.subDels)
				s.srv.metrics.subscriptions.Dec()
			}
			s.mu.Unlock()
		}
		done(err)
	})
}

func (s *Socket) unsubscribe(ch string) error {
	s.mu.Lock()
	if _, ok := s.subs[ch]; !ok {
		s.mu.Unlock()
		return codec.NewError(codec.InvalidActionError,
			"Socket "+s.id+" tried to unsubscribe from a channel which it is not subscribed to")
	}
	delete(s.subs, ch)
	s.subs = compacted(s.subs, &s.subDels)
	s.mu.Unlock()
	s.srv.metrics.subscriptions.Dec()
	s.srv.hub.unsubscribe(ch, s, nil)
	return nil
}

// Subscriptions lists the socket's channels.
func (s *Socket) Subscriptions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.subs))
	for ch := range s.subs {
		out = append(out, ch)
	}
	return out
}

// IsSubscribed reports whether the socket is subscribed to channel.
func (s *Socket) IsSubscribed(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subs[channel]
	return ok
}

// KickOut tells the client it was removed from channel (#kickOut, with
// message as its data) and unsubscribes the socket. An empty channel kicks
// the socket out of every channel.
func (s *Socket) KickOut(channel string, message any) {
	chans := []string{channel}
	if channel == "" {
		chans = s.Subscriptions()
	}
	msg, err := codec.Marshal(message)
	if err != nil {
		msg = json.RawMessage("null")
	}
	for _, ch := range chans {
		body := codec.AppendString([]byte(`{"channel":`), ch)
		body = append(append(append(body, `,"message":`...), msg...), '}')
		// Unsubscribed first: a subscribe still waiting for its broker is
		// answered before the client hears it was kicked out.
		_ = s.unsubscribe(ch)
		s.send(codec.AppendEvent(nil, "#kickOut", body, 0))
	}
}

// deliver queues a channel message for this socket. frame is the shared
// encoding; outbound middleware may block the delivery or change its data,
// in which case this socket gets its own encoding.
func (s *Socket) deliver(frame []byte, ch string, data json.RawMessage) {
	if s.state.Load() != stateOpen {
		return
	}
	if h := s.srv.h.Load(); len(h.outbound) > 0 {
		a := Action{Type: ActionPublishOut, Socket: s, Channel: ch, Data: data}
		for _, mw := range h.outbound {
			if err := callMiddleware(s.srv, s, "outbound middleware", mw, &a); err != nil {
				if err == errInternal {
					s.closeWith(CloseInternalError, "internal server error")
				}
				return
			}
		}
		if !sameBytes(a.Data, data) {
			frame = codec.AppendPublish(nil, ch, a.Data)
		}
	}
	if s.send(frame) {
		s.srv.metrics.deliveries.Inc()
	}
}

func sameBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}
