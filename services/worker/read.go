package worker

// The socket's reader: frames in, messages decoded, handed to dispatch.

import (
	"errors"
	"time"

	"github.com/scc-k8s/scc/pkg/codec"
)

// readLoop is the socket's reader. It runs until the connection is gone,
// except once: when the handshake has been answered and the client has
// nothing more to say yet, it hands over to a fresh goroutine. The
// handshake's work (JWT, middleware) grows a goroutine's stack to 4 KiB or
// more, and the runtime never shrinks one that deep; the fresh one waits
// for the next message with the 2 KiB an idle socket needs.
func (s *Socket) readLoop() {
	for {
		msg, err := s.rd.next()
		if err == errYield {
			go s.readLoop()
			return
		}
		if err != nil {
			defer s.srv.readers.Done()
			defer s.finish()
			code := CloseAbnormal
			reason := ""
			var ce *closeError
			var pe errProtocol
			switch {
			case errors.As(err, &ce):
				code, reason = ce.code, ce.text
			case errors.Is(err, errReadLimit):
				code = CloseMessageTooBig
				s.srv.metrics.badMessages.WithLabelValues("too_big").Inc()
			case errors.As(err, &pe):
				code, reason = CloseProtocolError, string(pe)
				s.srv.metrics.badMessages.WithLabelValues("bad_frame").Inc()
			}
			s.markClosed(code, reason)
			return
		}
		if s.state.Load() == stateClosed {
			continue // closing: wait for the peer's close frame
		}
		s.srv.metrics.messagesIn.Inc()
		s.lastSeen.Store(time.Now().UnixNano())
		s.onMessage(msg)
		if s.srv.cfg.InboundRate > 0 {
			s.throttle()
		}
	}
}

// throttle is a token bucket on inbound messages: over the rate, the reader
// sleeps and the client's further messages wait in TCP buffers.
func (s *Socket) throttle() {
	rate := s.srv.cfg.InboundRate
	burst := max(rate, 1)
	now := time.Now()
	if s.tokenAt.IsZero() {
		s.tokens = burst
	} else {
		s.tokens = min(burst, s.tokens+now.Sub(s.tokenAt).Seconds()*rate)
	}
	s.tokenAt = now
	s.tokens--
	if s.tokens < 0 {
		wait := time.Duration(-s.tokens / rate * float64(time.Second))
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
		}
	}
}

func (s *Socket) isPong(msg []byte) bool {
	if s.v1 {
		return string(msg) == "#2"
	}
	return len(msg) == 0
}

func (s *Socket) onMessage(msg []byte) {
	if s.isPong(msg) {
		if s.state.Load() == stateConnecting {
			s.Disconnect(CloseBeforeHandshake, "")
			return
		}
		s.checkExpiry()
		return
	}
	h := s.srv.h.Load()
	for _, mw := range h.inboundRaw {
		out, err := mw(s, msg)
		if err != nil {
			return
		}
		if out != nil {
			msg = out
		}
	}
	frames, _, raw := codec.Decode(msg, s.frames[:0])
	if raw {
		if s.state.Load() == stateConnecting {
			s.Disconnect(CloseBeforeHandshake, "")
			return
		}
		s.onRaw(h, msg)
		return
	}
	for i := range frames {
		if s.state.Load() == stateClosed {
			break
		}
		s.processFrame(h, &frames[i], msg)
	}
	clear(frames)
	s.frames = frames[:0]
}

func (s *Socket) onRaw(h *handlers, msg []byte) {
	s.srv.metrics.rawMessages.Inc()
	for _, fn := range h.onRaw {
		fn(s, msg)
	}
}

func (s *Socket) reject(reason string) {
	s.srv.metrics.badMessages.WithLabelValues(reason).Inc()
}
