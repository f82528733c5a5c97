package worker

// A socket's handshake and authentication (JWT).

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/codec"
)

func (s *Socket) handshake(h *handlers, f *codec.Frame) {
	tokenRaw := codec.Get(f.Data, "authToken")
	hasToken := !codec.IsNull(tokenRaw)
	claims, signed, authErr := s.verify(tokenRaw)

	for _, mw := range h.handshake {
		hs := &Handshake{Kind: HandshakeSC, Request: s.req, Socket: s, AuthToken: claims, AuthError: authErr}
		if err := callMiddleware(s.srv, s, "handshake middleware", mw, hs); err != nil {
			s.srv.metrics.handshakeReject.Inc()
			err = middlewareError(err, ActionType(0), "handshake")
			s.send(codec.AppendErrorResponse(nil, f.CID, err))
			code := closeCodeOf(err, CloseHandshakeRejected)
			if err == errInternal {
				code = CloseInternalError
			}
			s.closeWith(code, "")
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
		s.rd.SetLimit(s.srv.cfg.MaxPayload)
		s.rd.Yield()
		s.mu.Unlock()
		s.srv.metrics.handshakes.Inc()
		for _, fn := range h.onConnect {
			if !s.guard("connect hook", func() { fn(s) }) {
				return
			}
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
		if err := callMiddleware(s.srv, s, "inbound middleware", mw, &a); err != nil {
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
		s.closeWith(CloseAuthSignFailed, "")
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
