package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scc-k8s/scc/internal/ratelimit"
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
	gateway string // the GatewayHeader of the upgrade

	state    atomic.Int32
	lastSeen atomic.Int64 // unix nanos of the last inbound message
	lastPing atomic.Int64 // unix nanos of the last ping sent
	authExp  atomic.Int64 // unix nanos when the auth token expires; 0: no token or no exp

	mu          sync.Mutex // guards the fields below
	authToken   map[string]any
	signedToken string
	subs        map[string]struct{}
	subDels     int // deletions from subs since it was last copied
	// ops counts, per channel, this socket's subscribes and publishes the
	// broker has not answered yet; an unsubscribe waits for them (settle).
	ops         map[string]int
	opDels      int
	settleCh    string        // the channel settle waits for
	settled     chan struct{} // closed when ops[settleCh] reaches zero
	calls       map[int64]chan callResult
	nextCID     int64
	values      map[any]any
	closeCode   int
	closeReason string
	wasOpen     bool

	out outQueue

	// reader-only state
	frames         []codec.Frame
	throttleTokens ratelimit.Bucket // InboundRate
	floodTokens    ratelimit.Bucket // MaxInboundRate
}

type callResult struct {
	data json.RawMessage
	err  error
}

type outQueue struct {
	mu        sync.Mutex
	items     [][]byte
	spare     [][]byte
	bytes     int
	ping      bool
	writing   bool
	closed    bool // nothing more is accepted
	closing   bool // send the close frame (closeCode, closeText) once items are written
	closeCode int
	closeText string
}

var (
	pingV1 = []byte("#1")
	pingV2 = []byte("")
)

func (srv *Server) newSocket(c *wsConn, r *http.Request) *Socket {
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	s := &Socket{
		srv:     srv,
		id:      newSocketID(),
		ws:      c,
		req:     r,
		ctx:     ctx,
		cancel:  cancel,
		v1:      srv.cfg.ProtocolVersion == 1,
		created: now,
		gateway: r.Header.Get(GatewayHeader),
	}
	s.lastSeen.Store(now.UnixNano())
	s.lastPing.Store(now.UnixNano())
	s.rd = c.Reader()
	srv.addSocket(s)
	return s
}

// ID is the socket's 20-character id, sent to the client in the handshake.
func (s *Socket) ID() string { return s.id }

// Request is the HTTP upgrade request (headers, query string).
func (s *Socket) Request() *http.Request { return s.req }

// RemoteAddr is the client's IP address: the connection's peer, or, when
// that peer is a trusted proxy (Config.TrustedProxies), the address the
// proxies forwarded (X-Forwarded-For).
func (s *Socket) RemoteAddr() string { return s.srv.clientAddr(s.req) }

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
