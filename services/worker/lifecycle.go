package worker

// Closing a socket, its timeouts, and the end of its life.

import (
	"time"

	"github.com/scc-k8s/scc/internal/ws"
	"github.com/scc-k8s/scc/pkg/codec"
)

// Disconnect closes the socket with code and reason after the frames
// already queued (v1 sockets first get a #disconnect event, as 14.x
// servers send). A code that may not be sent in a close frame (1005, 1006,
// 1015, reserved or out of range; see ws.ValidCloseCode) is refused with
// an error wrapping ws.ErrCloseCode. The reason is cut to fit the frame.
func (s *Socket) Disconnect(code int, reason string) error {
	if err := ws.CheckCloseCode(code); err != nil {
		return err
	}
	s.closeWith(code, reason)
	return nil
}

// closeWith is Disconnect for a code known to be valid.
func (s *Socket) closeWith(code int, reason string) {
	reason = ws.CutReason(reason)
	if !s.markClosed(code, reason) {
		return
	}
	s.queueClose(code, reason, true)
}

// queueClose queues the close frame (a v1 socket's #disconnect first)
// behind the frames already queued. seal stops the queue at once; without
// it (a drain's close) the queue takes deliveries until the writer takes
// the close, and a close already queued is left as it is.
func (s *Socket) queueClose(code int, reason string, seal bool) {
	var disc []byte
	if s.v1 {
		disc = disconnectEvent(code, reason)
	}
	q := &s.out
	q.mu.Lock()
	if q.closed || (!seal && q.closing) {
		q.mu.Unlock()
		return
	}
	if disc != nil {
		q.items = append(q.items, disc)
	}
	q.closed = seal
	q.closing, q.closeCode, q.closeText = true, code, reason
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	if start {
		s.srv.writers.start(s)
	}
}

// disconnectEvent is the #disconnect event 14.x servers send a v1 socket
// before they close it.
func disconnectEvent(code int, reason string) []byte {
	body := append([]byte(`{"code":`), itoa(code)...)
	if reason != "" {
		body = codec.AppendString(append(body, `,"data":`...), reason)
	}
	return codec.AppendEvent(nil, "#disconnect", append(body, '}'), 0)
}

// markClosed moves the socket to closed and records why, once.
func (s *Socket) markClosed(code int, reason string) bool {
	for {
		st := s.state.Load()
		if st == stateClosed {
			return false
		}
		if s.state.CompareAndSwap(st, stateClosed) {
			break
		}
	}
	s.mu.Lock()
	s.closeCode, s.closeReason = code, reason
	s.mu.Unlock()
	return true
}

// tick is the sweeper's visit: write timeout, handshake timeout, pong
// timeout, ping.
func (s *Socket) tick(now time.Time) {
	switch s.state.Load() {
	case stateClosed:
		return
	case stateConnecting:
		if now.Sub(s.created) >= s.srv.cfg.HandshakeTimeout {
			s.closeWith(CloseHandshakeTimeout, "")
			return
		}
	}
	if since := s.ws.WriteStarted(); since != 0 && now.UnixNano()-since >= int64(s.srv.cfg.WriteTimeout) {
		// A write is stuck on a peer that does not read: cut the
		// connection, which fails the write and ends both goroutines.
		s.srv.log.Debug("write timed out", "conn", s.id)
		s.ws.Close()
		return
	}
	if now.UnixNano()-s.lastSeen.Load() >= int64(s.srv.cfg.PingTimeout) {
		s.closeWith(ClosePongTimeout, "")
		return
	}
	if now.UnixNano()-s.lastPing.Load() >= int64(s.srv.cfg.PingInterval) {
		s.lastPing.Store(now.UnixNano())
		s.sendPing()
	}
}

// finish runs once, on the reaper, when the connection is gone; it calls
// s.srv.readers.Done once the socket's disconnect hooks have returned.
func (s *Socket) finish() {
	s.ws.Close()
	s.markClosed(CloseAbnormal, "")
	q := &s.out
	q.mu.Lock()
	q.closed = true
	clear(q.items)
	q.items = nil
	q.mu.Unlock()
	s.cancel()

	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	code, reason, wasOpen := s.closeCode, s.closeReason, s.wasOpen
	s.mu.Unlock()
	for ch := range subs {
		s.srv.metrics.subscriptions.Dec()
		s.srv.hub.unsubscribe(ch, s, nil)
	}
	s.srv.removeSocket(s)
	s.srv.metrics.disconnects.WithLabelValues(itoa(code)).Inc()
	s.srv.log.Debug("socket closed", "conn", s.id, "code", code)
	if hooks := s.srv.h.Load().onDisconnect; wasOpen && len(hooks) > 0 {
		// User code may block: not on the reaper.
		go func() {
			defer s.srv.readers.Done()
			for _, fn := range hooks {
				s.guard("disconnect hook", func() { fn(s, code, reason) })
			}
		}()
		return
	}
	s.srv.readers.Done()
}
