package worker

// Server-to-client events: transmits and invokes the client answers.

import (
	"context"
	"encoding/json"

	"github.com/scc-k8s/scc/pkg/codec"
)

// Transmit sends an event the client handles without answering.
func (s *Socket) Transmit(event string, data any) error {
	raw, err := marshalData(data)
	if err != nil {
		return err
	}
	if !s.send(codec.AppendEvent(nil, event, raw, 0)) {
		return codec.NewError(codec.BadConnectionError, "Socket transmit "+event+" event was aborted due to a bad connection")
	}
	return nil
}

// Invoke sends an event the client answers and waits for the answer, for
// ctx, or for Config.AckTimeout when ctx has no deadline. It blocks: do not
// call it on the socket's own reader goroutine (from a procedure or
// receiver of the same socket) without starting a goroutine.
func (s *Socket) Invoke(ctx context.Context, event string, data any) (json.RawMessage, error) {
	raw, err := marshalData(data)
	if err != nil {
		return nil, err
	}
	ch := make(chan callResult, 1)
	s.mu.Lock()
	if s.state.Load() == stateClosed {
		s.mu.Unlock()
		return nil, codec.NewError(codec.BadConnectionError, "Socket invoke "+event+" event was aborted due to a bad connection")
	}
	s.nextCID++
	cid := s.nextCID
	if s.calls == nil {
		s.calls = make(map[int64]chan callResult)
	}
	s.calls[cid] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.calls, cid)
		s.mu.Unlock()
	}()
	s.send(codec.AppendEvent(nil, event, raw, cid))
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.srv.cfg.AckTimeout)
		defer cancel()
	}
	select {
	case r := <-ch:
		return r.data, r.err
	case <-ctx.Done():
		return nil, codec.NewError(codec.TimeoutError, "Event response for "+event+" event timed out")
	case <-s.ctx.Done():
		return nil, codec.NewError(codec.BadConnectionError, "Event "+event+" was aborted due to a bad connection")
	}
}

func (s *Socket) onResponse(f *codec.Frame) {
	rid, ok := codec.Int(f.RID)
	if !ok {
		return
	}
	s.mu.Lock()
	ch := s.calls[rid]
	delete(s.calls, rid)
	s.mu.Unlock()
	if ch == nil {
		return
	}
	r := callResult{data: f.Data}
	if e := codec.ParseError(f.Error); e != nil {
		r.err = e
	}
	ch <- r
}

func marshalData(data any) (json.RawMessage, error) {
	if data == nil {
		return nil, nil
	}
	return codec.Marshal(data)
}
