package worker

// The socket's reader: frames in, messages decoded, handed to dispatch.

import (
	"bytes"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/scc-k8s/scc/internal/ws"
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
		op, msg, err := s.rd.Next()
		if err == ws.ErrYield {
			go s.readLoop()
			return
		}
		if err != nil {
			code, reason := CloseAbnormal, ""
			var ce *ws.CloseError
			if errors.As(err, &ce) {
				code, reason = ce.Code, ce.Reason
				if !ce.Remote {
					s.srv.metrics.badMessages.WithLabelValues(closeReasons[ce.Code]).Inc()
				}
			}
			s.rd.Drop()
			s.markClosed(code, reason)
			s.srv.reaper.add(s) // it finishes the socket and calls s.srv.readers.Done
			return
		}
		if s.state.Load() == stateClosed {
			continue // closing: wait for the peer's close frame
		}
		s.srv.metrics.messagesIn.Inc()
		s.lastSeen.Store(time.Now().UnixNano())
		if op == ws.OpBinary && !utf8.Valid(msg) {
			// Read as text, as socketcluster-server does with binary
			// frames: what is not UTF-8 becomes U+FFFD, so nothing this
			// socket sends can reach another as an invalid text frame.
			msg = bytes.ToValidUTF8(msg, []byte("\uFFFD"))
		}
		if s.srv.cfg.MaxInboundRate > 0 && s.flooding() {
			s.srv.metrics.badMessages.WithLabelValues("too_many").Inc()
			s.closeWith(CloseTooManyMessages, "too many messages")
			continue
		}
		s.handleMessage(msg)
		if s.srv.cfg.InboundRate > 0 {
			s.throttle()
		}
	}
}

// closeReasons label the frames the reader refused, by the close code
// it answered them with.
var closeReasons = map[int]string{
	CloseProtocolError: "bad_frame", CloseInvalidPayload: "bad_utf8", CloseMessageTooBig: "too_big",
}

// throttle is a token bucket on inbound messages: over the rate, the reader
// sleeps and the client's further messages wait in TCP buffers.
func (s *Socket) throttle() {
	rate := s.srv.cfg.InboundRate
	if wait := s.throttleTokens.Take(time.Now(), rate, max(rate, 1)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
		}
	}
}

// flooding takes a message from the MaxInboundRate bucket and reports
// whether there was none to take.
func (s *Socket) flooding() bool {
	rate := s.srv.cfg.MaxInboundRate
	return !s.floodTokens.Allow(time.Now(), rate, max(rate, 1))
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
			s.closeWith(CloseBeforeHandshake, "")
			return
		}
		s.checkExpiry()
		return
	}
	h := s.srv.h.Load()
	for _, mw := range h.inboundRaw {
		var out []byte
		var err error
		if !s.guard("inbound raw middleware", func() { out, err = mw(s, msg) }) || err != nil {
			return
		}
		if out != nil {
			msg = out
		}
	}
	frames, _, raw := codec.Decode(msg, s.frames[:0])
	if raw {
		if s.state.Load() == stateConnecting {
			s.closeWith(CloseBeforeHandshake, "")
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
		if !s.guard("raw hook", func() { fn(s, msg) }) {
			return
		}
	}
}

func (s *Socket) reject(reason string) {
	s.srv.metrics.badMessages.WithLabelValues(reason).Inc()
}
