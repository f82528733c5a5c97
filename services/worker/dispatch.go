package worker

// What a socket does with each inbound SocketCluster frame.

import (
	"encoding/json"
	"errors"

	"github.com/scc-k8s/scc/internal/ws"
	"github.com/scc-k8s/scc/pkg/codec"
)

func (s *Socket) processFrame(h *handlers, f *codec.Frame, msg []byte) {
	if !f.HasEvent {
		if s.state.Load() == stateConnecting {
			s.closeWith(CloseBeforeHandshake, "")
			return
		}
		if f.RID != nil {
			s.onResponse(f)
			return
		}
		s.onRaw(h, msg)
		return
	}
	invoke := f.CID != nil
	switch f.Event {
	case "#handshake":
		if !invoke {
			s.reject("malformed_handshake")
			s.closeWith(CloseHandshakeRejected, "Handshake request was malformatted")
			return
		}
		s.handshake(h, f)
		return
	}
	if s.state.Load() == stateConnecting {
		s.closeWith(CloseBeforeHandshake, "")
		return
	}
	switch f.Event {
	case "#authenticate":
		if !invoke {
			s.reject("malformed_authenticate")
			s.closeWith(CloseHandshakeRejected, "Authenticate request was malformatted")
			return
		}
		s.authenticate(h, f)
		return
	case "#removeAuthToken":
		s.deauthenticateSelf()
		return
	case "#disconnect":
		if s.v1 { // 14.x servers close with the code the client names
			code := CloseNormal
			if c, ok := codec.Int(codec.Get(f.Data, "code")); ok && ws.ValidCloseCode(int(c)) {
				code = int(c)
			}
			s.closeWith(code, "")
			return
		}
	}

	a := Action{Socket: s, AuthTokenExpiredError: s.checkExpiry()}
	switch f.Event {
	case "#publish":
		if s.srv.cfg.DisallowClientPublish {
			s.reject("publish_disabled")
			s.failInvoke(f, codec.NewError(codec.InvalidActionError, "Client publish feature is disabled"))
			return
		}
		ch, data, ok := codec.Publish(f.Data) // one pass over the frame's data
		if !ok {
			s.reject("malformed_publish")
			s.failInvoke(f, codec.NewError(codec.InvalidActionError, "Publish channel name was malformatted"))
			return
		}
		if err := s.checkChannelName(ch); err != nil {
			s.failInvoke(f, err)
			return
		}
		a.Type, a.Channel, a.Data = ActionPublishIn, ch, data
	case "#subscribe":
		ch, ok := codec.String(codec.Get(f.Data, "channel"))
		if !ok && s.v1 { // 14.x also takes the channel name as the data itself
			ch, ok = codec.String(f.Data)
		}
		if !ok {
			s.reject("malformed_subscribe")
			s.failInvoke(f, codec.NewError(codec.InvalidActionError, "Subscribe channel name was malformatted"))
			return
		}
		if err := s.checkChannelName(ch); err != nil {
			s.failInvoke(f, err)
			return
		}
		if !invoke && !s.v1 {
			// 19.x servers act on #subscribe only as an invoke.
			s.reject("subscribe_without_cid")
			return
		}
		a.Type, a.Channel = ActionSubscribe, ch
		a.Data, _ = codec.Field(f.Data, "data")
	case "#unsubscribe":
		ch, ok := codec.String(f.Data)
		if !ok {
			s.reject("malformed_unsubscribe")
			s.failInvoke(f, codec.NewError(codec.InvalidActionError, "Unsubscribe channel name was malformatted"))
			return
		}
		s.settle(ch)
		if err := s.unsubscribe(ch); err != nil {
			s.failInvoke(f, codec.NewError(codec.BrokerError,
				"Failed to unsubscribe socket from the "+ch+" channel - "+err.Error()))
			return
		}
		if invoke {
			s.send(codec.AppendResponse(nil, f.CID, nil))
		}
		return
	default:
		a.Event, a.Data = f.Event, f.Data
		a.Type = ActionTransmit
		if invoke {
			a.Type = ActionInvoke
		}
	}

	for _, mw := range h.inbound {
		if err := callMiddleware(s.srv, s, "inbound middleware", mw, &a); err != nil {
			if err == errInternal && !invoke {
				s.closeWith(CloseInternalError, "internal server error")
				return
			}
			s.failInvoke(f, middlewareError(err, a.Type, "inbound"))
			return
		}
	}

	switch a.Type {
	case ActionPublishIn:
		ch, cid := a.Channel, f.CID
		s.opStart(ch)
		s.srv.publish(ch, a.Data, func(err error) {
			defer s.opDone(ch) // after the answer is queued
			switch {
			case cid == nil:
			case err != nil:
				s.send(codec.AppendErrorResponse(nil, cid, brokerError(err)))
			default:
				s.send(codec.AppendResponse(nil, cid, nil))
			}
		})
	case ActionSubscribe:
		cid := f.CID
		s.subscribe(a.Channel, func(err error) {
			if cid == nil {
				return
			}
			if err != nil {
				s.send(codec.AppendErrorResponse(nil, cid, codec.NewError(codec.BrokerError,
					"Failed to subscribe socket to the "+a.Channel+" channel - "+err.Error())))
				return
			}
			s.send(codec.AppendResponse(nil, cid, nil))
		})
	case ActionInvoke:
		fn := h.procedures[a.Event]
		if fn == nil {
			return // nobody handles it: no response, as in SocketCluster
		}
		res, err := s.callProcedure(fn, &Request{Socket: s, Procedure: a.Event, Data: a.Data})
		if err != nil {
			s.send(codec.AppendErrorResponse(nil, f.CID, err))
			return
		}
		var data json.RawMessage
		if res != nil {
			if data, err = codec.Marshal(res); err != nil {
				s.send(codec.AppendErrorResponse(nil, f.CID, codec.NewError("Error", "cannot encode response: "+err.Error())))
				return
			}
		}
		s.send(codec.AppendResponse(nil, f.CID, data))
	case ActionTransmit:
		if fn := h.receivers[a.Event]; fn != nil {
			s.guard("receiver", func() { fn(s, a.Data) })
		}
	}
}

// brokerError gives a broker failure the name clients expect.
func brokerError(err error) error {
	var ce *codec.Error
	if errors.As(err, &ce) {
		return err
	}
	return codec.NewError(codec.BrokerError, err.Error())
}

// failInvoke answers an invoke with err; a transmit gets nothing.
func (s *Socket) failInvoke(f *codec.Frame, err error) {
	if f.CID != nil {
		s.send(codec.AppendErrorResponse(nil, f.CID, err))
	}
}

func (s *Socket) checkChannelName(ch string) error {
	if len(ch) > s.srv.cfg.MaxChannelNameLength {
		s.reject("channel_name_too_long")
		return codec.NewError(codec.InvalidActionError,
			"Channel name exceeds the maximum length of "+itoa(s.srv.cfg.MaxChannelNameLength)+" bytes")
	}
	return nil
}
