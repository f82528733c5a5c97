package worker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/codec"
)

const (
	stateConnecting int32 = iota
	stateOpen
	stateClosed
)

// maxBatchBytes bounds one coalesced write (a JSON array of frames).
const maxBatchBytes = 64 << 10

// closeGrace is how long a closing socket waits for the peer's close frame.
const closeGrace = 2 * time.Second

// Socket is one client connection.
type Socket struct {
	srv     *Server
	id      string
	ws      *wsConn
	rd      *wsReader
	req     *http.Request
	ctx     context.Context
	cancel  context.CancelFunc
	v1      bool
	created time.Time

	state    atomic.Int32
	lastSeen atomic.Int64 // unix nanos of the last inbound message
	lastPing atomic.Int64 // unix nanos of the last ping sent
	authExp  atomic.Int64 // unix nanos when the auth token expires; 0: no token or no exp

	mu          sync.Mutex // guards the fields below
	authToken   map[string]any
	signedToken string
	subs        map[string]struct{}
	subDels     int // deletions from subs since it was last copied
	calls       map[int64]chan callResult
	nextCID     int64
	values      map[any]any
	closeCode   int
	closeReason string
	wasOpen     bool

	out outQueue

	// reader-only state
	frames  []codec.Frame
	tokens  float64
	tokenAt time.Time
}

type callResult struct {
	data json.RawMessage
	err  error
}

type outQueue struct {
	mu       sync.Mutex
	items    [][]byte
	spare    [][]byte
	bytes    int
	ping     bool
	writing  bool
	closed   bool   // nothing more is accepted
	closeMsg []byte // close frame to send once items are written
}

var (
	pingV1 = []byte("#1")
	pingV2 = []byte("")
)

func (srv *Server) newSocket(ws *wsConn, r *http.Request) *Socket {
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	s := &Socket{
		srv:     srv,
		id:      newSocketID(),
		ws:      ws,
		req:     r,
		ctx:     ctx,
		cancel:  cancel,
		v1:      srv.cfg.ProtocolVersion == 1,
		created: now,
	}
	s.lastSeen.Store(now.UnixNano())
	s.lastPing.Store(now.UnixNano())
	s.rd = newWSReader(ws.nc, ws, srv.cfg.MaxPayload)
	srv.addSocket(s)
	return s
}

// ID is the socket's 20-character id, sent to the client in the handshake.
func (s *Socket) ID() string { return s.id }

// Request is the HTTP upgrade request (headers, query string).
func (s *Socket) Request() *http.Request { return s.req }

// RemoteAddr is the client's IP address.
func (s *Socket) RemoteAddr() string { return remoteAddr(s.req) }

// Context is done when the socket closes.
func (s *Socket) Context() context.Context { return s.ctx }

// ProtocolVersion is 1 or 2.
func (s *Socket) ProtocolVersion() int {
	if s.v1 {
		return 1
	}
	return 2
}

// IsOpen reports whether the handshake completed and the socket is open.
func (s *Socket) IsOpen() bool { return s.state.Load() == stateOpen }

// Set stores a per-socket value.
func (s *Socket) Set(key, value any) {
	s.mu.Lock()
	if s.values == nil {
		s.values = make(map[any]any)
	}
	s.values[key] = value
	s.mu.Unlock()
}

// Get returns a per-socket value.
func (s *Socket) Get(key any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.values[key]
}

// ---- reading ----

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

func (s *Socket) processFrame(h *handlers, f *codec.Frame, msg []byte) {
	if !f.HasEvent {
		if s.state.Load() == stateConnecting {
			s.Disconnect(CloseBeforeHandshake, "")
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
			s.Disconnect(CloseHandshakeRejected, "Handshake request was malformatted")
			return
		}
		s.handshake(h, f)
		return
	}
	if s.state.Load() == stateConnecting {
		s.Disconnect(CloseBeforeHandshake, "")
		return
	}
	switch f.Event {
	case "#authenticate":
		if !invoke {
			s.reject("malformed_authenticate")
			s.Disconnect(CloseHandshakeRejected, "Authenticate request was malformatted")
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
			if c, ok := codec.Int(codec.Get(f.Data, "code")); ok && validCloseCode(int(c)) {
				code = int(c)
			}
			s.Disconnect(code, "")
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
		if err := mw(&a); err != nil {
			s.failInvoke(f, middlewareError(err, a.Type, "inbound"))
			return
		}
	}

	switch a.Type {
	case ActionPublishIn:
		var done func(error)
		if invoke {
			cid := f.CID
			done = func(err error) {
				if err != nil {
					s.send(codec.AppendErrorResponse(nil, cid, brokerError(err)))
					return
				}
				s.send(codec.AppendResponse(nil, cid, nil))
			}
		}
		s.srv.publish(a.Channel, a.Data, done)
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
		res, err := fn(&Request{Socket: s, Procedure: a.Event, Data: a.Data})
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
			fn(s, a.Data)
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

func validCloseCode(c int) bool {
	return c == 1000 || (c >= 3000 && c <= 4999)
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

// ---- handshake and authentication ----

func (s *Socket) handshake(h *handlers, f *codec.Frame) {
	tokenRaw := codec.Get(f.Data, "authToken")
	hasToken := !codec.IsNull(tokenRaw)
	claims, signed, authErr := s.verify(tokenRaw)

	for _, mw := range h.handshake {
		hs := &Handshake{Kind: HandshakeSC, Request: s.req, Socket: s, AuthToken: claims, AuthError: authErr}
		if err := mw(hs); err != nil {
			s.srv.metrics.handshakeReject.Inc()
			err = middlewareError(err, ActionType(0), "handshake")
			s.send(codec.AppendErrorResponse(nil, f.CID, err))
			s.Disconnect(closeCodeOf(err, CloseHandshakeRejected), "")
			return
		}
	}
	if authErr == nil && claims != nil {
		if err := s.applyAuth(h, claims, signed); err != nil {
			authErr = asAuthError(err)
		}
	} else if authErr != nil {
		s.clearAuth()
	}

	status := make([]byte, 0, 128)
	status = append(status, `{"id":`...)
	status = codec.AppendString(status, s.id)
	status = append(status, `,"pingTimeout":`...)
	status = append(status, itoa(int(s.srv.cfg.PingTimeout/time.Millisecond))...)
	if hasToken && authErr != nil {
		status = append(status, `,"authError":`...)
		status = codec.AppendError(status, authErr)
	}
	status = append(status, `,"isAuthenticated":`...)
	if s.IsAuthenticated() {
		status = append(status, "true}"...)
	} else {
		status = append(status, "false}"...)
	}
	badToken := hasToken && authErr != nil && isBadToken(authErr)
	if badToken && s.v1 {
		s.send(codec.AppendEvent(nil, "#removeAuthToken", json.RawMessage("null"), 0))
	}
	s.send(codec.AppendResponse(nil, f.CID, status))
	if badToken && !s.v1 {
		s.send(codec.AppendEvent(nil, "#removeAuthToken", nil, 0))
	}
	if s.state.CompareAndSwap(stateConnecting, stateOpen) {
		s.mu.Lock()
		s.wasOpen = true
		s.rd.yield = true
		s.mu.Unlock()
		s.srv.metrics.handshakes.Inc()
		for _, fn := range h.onConnect {
			fn(s)
		}
	}
}

// verify checks a token from the wire. A missing token (absent or null)
// gives no claims and no error.
func (s *Socket) verify(raw json.RawMessage) (map[string]any, string, *codec.Error) {
	if codec.IsNull(raw) {
		return nil, "", nil
	}
	tok, ok := codec.String(raw)
	if !ok {
		return nil, "", codec.NewError(codec.AuthTokenErrorName, "Invalid token format - Token must be a string",
			codec.Member{Key: "isBadToken", Value: true})
	}
	claims, err := s.srv.auth.Verify(tok, s.srv.cfg.Clock())
	if err != nil {
		return nil, tok, err
	}
	return claims, tok, nil
}

// applyAuth runs authenticate middleware for verified claims and, when it
// allows them, makes them the socket's token.
func (s *Socket) applyAuth(h *handlers, claims map[string]any, signed string) error {
	a := Action{Type: ActionAuthenticate, Socket: s, AuthToken: claims, SignedAuthToken: signed}
	for _, mw := range h.inbound {
		if err := mw(&a); err != nil {
			s.clearAuth()
			return middlewareError(err, ActionAuthenticate, "inbound")
		}
	}
	s.setAuth(claims, signed)
	return nil
}

func asAuthError(err error) *codec.Error {
	var ce *codec.Error
	if errors.As(err, &ce) {
		return ce
	}
	return codec.NewError(codec.AuthErrorName, err.Error())
}

func isBadToken(e *codec.Error) bool {
	v, ok := e.Get("isBadToken")
	b, _ := v.(bool)
	return ok && b
}

func (s *Socket) authenticate(h *handlers, f *codec.Frame) {
	claims, signed, authErr := s.verify(f.Data)
	if authErr == nil && claims == nil {
		authErr = codec.NewError(codec.AuthTokenInvalidError, "jwt must be provided", codec.Member{Key: "isBadToken", Value: true})
	}
	if authErr == nil {
		if err := s.applyAuth(h, claims, signed); err != nil {
			authErr = asAuthError(err)
		}
	}
	if authErr == nil {
		s.send(codec.AppendResponse(nil, f.CID, json.RawMessage(`{"isAuthenticated":true,"authError":null}`)))
		return
	}
	if !isBadToken(authErr) {
		// The token is fine but not usable yet (or middleware refused it
		// without calling it bad): a soft failure.
		s.clearAuth()
		body := append([]byte(`{"isAuthenticated":false,"authError":`), codec.AppendError(nil, authErr)...)
		s.send(codec.AppendResponse(nil, f.CID, append(body, '}')))
		return
	}
	s.clearAuth()
	if s.v1 {
		// 14.x: #removeAuthToken first, then the error with the auth status.
		s.send(codec.AppendEvent(nil, "#removeAuthToken", json.RawMessage("null"), 0))
		body := append([]byte(`{"isAuthenticated":false,"authError":`), codec.AppendError(nil, authErr)...)
		s.send(codec.AppendErrorResponseWithData(nil, f.CID, authErr, append(body, '}')))
		return
	}
	s.send(codec.AppendErrorResponse(nil, f.CID, authErr))
	s.send(codec.AppendEvent(nil, "#removeAuthToken", nil, 0))
}

func (s *Socket) setAuth(claims map[string]any, signed string) {
	s.mu.Lock()
	s.authToken, s.signedToken = claims, signed
	s.mu.Unlock()
	if exp, ok := auth.Expiry(claims); ok {
		s.authExp.Store(exp.UnixNano())
	} else {
		s.authExp.Store(0)
	}
}

func (s *Socket) clearAuth() (had bool) {
	s.mu.Lock()
	had = s.authToken != nil
	s.authToken, s.signedToken = nil, ""
	s.mu.Unlock()
	s.authExp.Store(0)
	return had
}

// checkExpiry deauthenticates a socket whose token has expired and returns
// the error inbound middleware then sees.
func (s *Socket) checkExpiry() *codec.Error {
	exp := s.authExp.Load()
	if exp == 0 || s.srv.cfg.Clock().UnixNano() <= exp {
		return nil
	}
	s.mu.Lock()
	expClaim := s.authToken["exp"]
	s.mu.Unlock()
	s.Deauthenticate()
	return auth.ExpiredError("The socket auth token has expired", expClaim)
}

// SetAuthToken signs claims (adding "iat", and "exp" from the default
// expiry when missing), makes them the socket's token and sends it to the
// client in #setAuthToken.
func (s *Socket) SetAuthToken(claims map[string]any) error {
	if s.state.Load() == stateConnecting {
		return codec.NewError(codec.InvalidActionError, "Cannot call setAuthToken before completing the handshake")
	}
	signed, final, err := s.srv.auth.Sign(claims, s.srv.cfg.Clock())
	if err != nil {
		s.Disconnect(CloseAuthSignFailed, "")
		return err
	}
	// Keep the claims as a verifier would see them (numbers as float64).
	normalized := make(map[string]any, len(final))
	if raw, err := json.Marshal(final); err == nil {
		_ = json.Unmarshal(raw, &normalized)
	}
	s.setAuth(normalized, signed)
	body := codec.AppendString([]byte(`{"token":`), signed)
	s.send(codec.AppendEvent(nil, "#setAuthToken", append(body, '}'), 0))
	return nil
}

// AuthToken returns the socket's verified token claims, or nil.
func (s *Socket) AuthToken() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authToken
}

// SignedAuthToken returns the socket's token as the client holds it.
func (s *Socket) SignedAuthToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signedToken
}

// IsAuthenticated reports whether the socket has a token.
func (s *Socket) IsAuthenticated() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authToken != nil
}

// Deauthenticate drops the socket's token and tells the client to remove
// its copy (#removeAuthToken).
func (s *Socket) Deauthenticate() {
	s.clearAuth()
	if s.v1 {
		s.send(codec.AppendEvent(nil, "#removeAuthToken", json.RawMessage("null"), 0))
		return
	}
	s.send(codec.AppendEvent(nil, "#removeAuthToken", nil, 0))
}

// deauthenticateSelf drops the token without telling the client (it asked).
func (s *Socket) deauthenticateSelf() { s.clearAuth() }

// ---- pub/sub ----

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
	s.mu.Unlock()
	s.srv.hub.subscribe(ch, s, nil, func(err error) {
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
		s.send(codec.AppendEvent(nil, "#kickOut", body, 0))
		_ = s.unsubscribe(ch)
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
			if err := mw(&a); err != nil {
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

// ---- server to client ----

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

// ---- writing ----

// send queues one encoded frame. It never blocks: a socket whose queue
// passes MaxPendingBytes is closed as a slow consumer. It reports whether
// the frame was queued.
func (s *Socket) send(frame []byte) bool {
	q := &s.out
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, frame)
	q.bytes += len(frame)
	if q.bytes > s.srv.cfg.MaxPendingBytes {
		q.closed = true
		clear(q.items)
		q.items = q.items[:0]
		q.bytes = 0
		q.mu.Unlock()
		s.slowConsumer()
		return false
	}
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	s.srv.metrics.messagesOut.Inc()
	if start {
		s.srv.writers.start(s)
	}
	return true
}

func (s *Socket) sendPing() {
	q := &s.out
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.ping = true
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	if start {
		s.srv.writers.start(s)
	}
}

// writeLoop drains the queue: it runs while frames are pending and exits
// when the queue is empty, so an idle socket has no writer goroutine.
// Frames queued together go out as one JSON array (a batch) in one write.
// batchBufs recycles the buffers batches are built in: a writer exists
// only while its socket has frames queued, so a per-writer buffer would
// be allocated again for every burst.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (s *Socket) writeLoop() {
	q := &s.out
	bp := batchBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 2*maxBatchBytes {
			*bp = buf[:0]
			batchBufs.Put(bp)
		}
	}()
	for {
		q.mu.Lock()
		items, ping, closeMsg := q.items, q.ping, q.closeMsg
		q.items, q.spare = q.spare, nil
		q.bytes, q.ping, q.closeMsg = 0, false, nil
		if len(items) == 0 && !ping && closeMsg == nil {
			q.writing = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()

		var err error
		if ping {
			p := pingV2
			if s.v1 {
				p = pingV1
			}
			err = s.ws.writeFrame(opText, p)
		}
		for i := 0; err == nil && i < len(items); {
			if len(items[i]) >= maxBatchBytes {
				err = s.ws.writeFrame(opText, items[i])
				i++
				continue
			}
			// The frame is built behind room for its header: batch and
			// header leave in one write.
			buf = append(buf[:0], noHeader[:]...)
			j := i + 1
			if i < len(items)-1 && len(items[i])+len(items[j]) < maxBatchBytes {
				buf = append(append(buf, '['), items[i]...)
				for ; j < len(items) && len(buf)-maxHeader+len(items[j]) < maxBatchBytes; j++ {
					buf = append(append(buf, ','), items[j]...)
				}
				buf = append(buf, ']')
			} else {
				buf = append(buf, items[i]...) // alone: sent bare
			}
			err = s.ws.writeFramed(opText, buf)
			i = j
		}
		if err == nil && closeMsg != nil {
			err = s.ws.writeControl(opClose, closeMsg, true)
			// The reader finishes when the peer's close frame arrives or,
			// at the latest, after closeGrace.
			_ = s.ws.nc.SetReadDeadline(time.Now().Add(closeGrace))
		}
		clear(items)
		q.mu.Lock()
		if q.spare == nil {
			q.spare = items[:0]
		}
		q.mu.Unlock()
		if err != nil {
			q.mu.Lock()
			q.closed, q.writing = true, false
			clear(q.items)
			q.items = nil
			q.mu.Unlock()
			s.ws.nc.Close() // the reader sees it and cleans up
			return
		}
	}
}

func (s *Socket) slowConsumer() {
	s.srv.metrics.slowConsumers.Inc()
	s.markClosed(CloseSlowConsumer, "slow consumer")
	s.srv.log.Debug("closing slow consumer", "conn", s.id)
	// Say why if no write is stuck on the peer (briefly: it may not be
	// reading at all), then cut the connection.
	_ = s.ws.nc.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	_ = s.ws.writeControl(opClose, closePayload(CloseSlowConsumer, "slow consumer"), false)
	s.ws.nc.Close()
}

// ---- closing ----

// Disconnect closes the socket with code and reason after the frames
// already queued (v1 sockets first get a #disconnect event, as 14.x
// servers send).
func (s *Socket) Disconnect(code int, reason string) {
	if !s.markClosed(code, reason) {
		return
	}
	var disc []byte
	if s.v1 {
		body := append([]byte(`{"code":`), itoa(code)...)
		if reason != "" {
			body = codec.AppendString(append(body, `,"data":`...), reason)
		}
		disc = codec.AppendEvent(nil, "#disconnect", append(body, '}'), 0)
	}
	q := &s.out
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if disc != nil {
		q.items = append(q.items, disc)
	}
	q.closed = true
	q.closeMsg = closePayload(code, reason)
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	if start {
		s.srv.writers.start(s)
	}
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
			s.Disconnect(CloseHandshakeTimeout, "")
			return
		}
	}
	if ws := s.ws.since.Load(); ws != 0 && now.UnixNano()-ws >= int64(s.srv.cfg.WriteTimeout) {
		// A write is stuck on a peer that does not read: cut the
		// connection, which fails the write and ends both goroutines.
		s.srv.log.Debug("write timed out", "conn", s.id)
		s.ws.nc.Close()
		return
	}
	if now.UnixNano()-s.lastSeen.Load() >= int64(s.srv.cfg.PingTimeout) {
		s.Disconnect(ClosePongTimeout, "")
		return
	}
	if now.UnixNano()-s.lastPing.Load() >= int64(s.srv.cfg.PingInterval) {
		s.lastPing.Store(now.UnixNano())
		s.sendPing()
	}
}

// finish runs once on the reader goroutine when the connection is gone.
func (s *Socket) finish() {
	s.ws.nc.Close()
	s.rd.drop()
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
	if wasOpen {
		for _, fn := range s.srv.h.Load().onDisconnect {
			fn(s, code, reason)
		}
	}
	s.srv.log.Debug("socket closed", "conn", s.id, "code", code)
}
