package worker

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/scc-k8s/scc/internal/ws"
	"github.com/scc-k8s/scc/pkg/codec"
)

// ActionType tells what a socket is doing when middleware sees it.
type ActionType int

// The actions inbound and outbound middleware see (SocketCluster's
// AGAction types).
const (
	ActionTransmit     ActionType = iota + 1 // a transmit (event without cid)
	ActionInvoke                             // an invoke (RPC)
	ActionSubscribe                          // #subscribe
	ActionPublishIn                          // #publish from the client
	ActionAuthenticate                       // a valid token presented at handshake or #authenticate
	ActionPublishOut                         // a channel message about to be delivered to this socket
)

func (t ActionType) String() string {
	switch t {
	case ActionTransmit:
		return "transmit"
	case ActionInvoke:
		return "invoke"
	case ActionSubscribe:
		return "subscribe"
	case ActionPublishIn:
		return "publishIn"
	case ActionAuthenticate:
		return "authenticate"
	case ActionPublishOut:
		return "publishOut"
	}
	return "unknown"
}

// Action is what middleware allows, transforms or blocks. Middleware
// allows an action by returning nil, optionally after replacing Data; it
// blocks it by returning an error, which the client receives as the
// response's error (dehydrated; a *codec.Error keeps its name), or
// ErrSilentBlock, which the client receives as SilentMiddlewareBlockedError.
type Action struct {
	Type   ActionType
	Socket *Socket
	// Event is the procedure (invoke) or receiver (transmit) name.
	Event string
	// Channel is set for subscribe, publishIn and publishOut.
	Channel string
	// Data is the action's payload as raw JSON (for subscribe, the
	// subscription options' "data"). Middleware may replace it.
	Data json.RawMessage
	// AuthToken and SignedAuthToken are set for ActionAuthenticate.
	AuthToken       map[string]any
	SignedAuthToken string
	// AuthTokenExpiredError is set when the socket's token expired just
	// before this action (the socket has been deauthenticated).
	AuthTokenExpiredError *codec.Error
}

// ErrSilentBlock, returned by middleware, blocks an action; the client
// gets a SilentMiddlewareBlockedError.
var ErrSilentBlock = errors.New("worker: blocked silently by middleware")

// HandshakeKind tells the two handshake stages apart.
type HandshakeKind int

const (
	// HandshakeWS is the HTTP upgrade request; blocking it answers HTTP 401.
	HandshakeWS HandshakeKind = iota + 1
	// HandshakeSC is the #handshake event; blocking it sends the error to
	// the client and closes the socket with the error's close code (4008
	// unless set with WithCloseCode).
	HandshakeSC
)

// Handshake is what handshake middleware sees.
type Handshake struct {
	Kind    HandshakeKind
	Request *http.Request
	// Socket, AuthToken and AuthError are set for HandshakeSC. AuthToken is
	// the verified token's claims, or nil; AuthError the verification error.
	Socket    *Socket
	AuthToken map[string]any
	AuthError *codec.Error
}

// Middleware signatures.
type (
	HandshakeMiddleware  func(h *Handshake) error
	InboundRawMiddleware func(s *Socket, message []byte) ([]byte, error)
	InboundMiddleware    func(a *Action) error
	OutboundMiddleware   func(a *Action) error
)

type closeCodeError struct {
	error
	code int
}

func (e *closeCodeError) Unwrap() error { return e.error }

// WithCloseCode makes a handshake middleware's error close the socket with
// code instead of 4008. A code that may not be sent in a close frame (see
// ws.ValidCloseCode) is refused: the result then also wraps
// ws.ErrCloseCode, and the socket is closed with 4008.
func WithCloseCode(err error, code int) error {
	if cerr := ws.CheckCloseCode(code); cerr != nil {
		return errors.Join(err, cerr)
	}
	return &closeCodeError{err, code}
}

func closeCodeOf(err error, def int) int {
	var c *closeCodeError
	if errors.As(err, &c) {
		return c.code
	}
	return def
}

// middlewareError turns what middleware returned into what the client gets.
func middlewareError(err error, a ActionType, stage string) error {
	if errors.Is(err, ErrSilentBlock) {
		return codec.NewError(codec.SilentMiddlewareBlockedError,
			"The "+a.String()+" AGAction was blocked by "+stage+" middleware",
			codec.Member{Key: "type", Value: stage})
	}
	return err
}
