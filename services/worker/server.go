// Package worker is the SocketCluster server: the service WebSocket clients
// connect to. It speaks the SocketCluster protocol (versions 1 and 2) so the
// official JavaScript clients work unchanged, authenticates sockets with
// JWTs, runs middleware, serves RPC procedures and transmit receivers, and
// fans channel messages out to local subscribers, routing publishes through
// a Broker (in-process, or the cluster's brokers over gRPC).
//
// It is also a library: a program creates a Server, registers procedures,
// receivers and middleware, and serves it as an http.Handler, as
// SocketCluster users wrote worker.js.
//
// Concurrency: each connection has one reader goroutine, which processes
// the socket's inbound messages in order, and at most
// one writer goroutine, started when frames are queued and gone when the
// queue is empty. One sweeper goroutine per server sends pings and enforces
// the ping and handshake timeouts.
//
// Lock order: hub shard lock, then broker locks; Socket.mu, then the
// socket's outbound queue lock. No lock is held during network I/O or while
// calling user code.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scc-k8s/scc/internal/tunnel"
	"github.com/scc-k8s/scc/internal/ws"
	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/codec"
	"github.com/scc-k8s/scc/pkg/ops"
)

// Close codes of the SocketCluster protocol and of this server.
const (
	CloseNormal            = ws.CloseNormal
	CloseGoingAway         = ws.CloseGoingAway
	CloseProtocolError     = ws.CloseProtocolError
	CloseNoStatus          = ws.CloseNoStatus // never sent
	CloseAbnormal          = ws.CloseAbnormal // never sent: the connection ended without a close frame
	CloseInvalidPayload    = ws.CloseInvalidPayload
	CloseMessageTooBig     = ws.CloseMessageTooBig
	CloseInternalError     = ws.CloseInternalError // a panic in the socket's handlers
	ClosePingTimeout       = 4000                  // sent by clients; see CloseDraining
	ClosePongTimeout       = 4001
	CloseAuthSignFailed    = 4002
	CloseHandshakeTimeout  = 4005
	CloseHandshakeRejected = 4008
	CloseBeforeHandshake   = 4009
	// CloseDraining closes sockets when the server shuts down. It reuses
	// 4000 because SocketCluster clients reconnect at once after it (after
	// any other code below 4500 they back off for 10-20 s), which is what a
	// draining worker wants: its clients back on another worker now.
	CloseDraining = 4000
	// CloseSlowConsumer closes a socket whose outbound queue passed
	// Config.MaxPendingBytes. Clients reconnect with backoff.
	CloseSlowConsumer = 4100
	// CloseTooManyMessages closes a socket that sent more messages than
	// Config.MaxInboundRate allows. Clients reconnect with backoff.
	CloseTooManyMessages = 4429
)

// ProcedureFunc serves an RPC. It runs on the socket's reader goroutine, in
// order with the socket's other messages. Its result is sent as the
// response's data (nil leaves data out; a json.RawMessage is sent as is);
// its error as the response's error.
type ProcedureFunc func(req *Request) (any, error)

// ReceiverFunc handles a transmit. It runs on the socket's reader goroutine.
type ReceiverFunc func(s *Socket, data json.RawMessage)

// Request is one RPC from a client.
type Request struct {
	Socket    *Socket
	Procedure string
	Data      json.RawMessage
}

// Context is done when the socket closes.
func (r *Request) Context() context.Context { return r.Socket.ctx }

// Decode unmarshals the request's data into v.
func (r *Request) Decode(v any) error {
	if r.Data == nil {
		return codec.NewError(codec.InvalidArgumentsError, "missing data")
	}
	return json.Unmarshal(r.Data, v)
}

// handlers is the copy-on-write set of everything users register.
type handlers struct {
	procedures   map[string]ProcedureFunc
	receivers    map[string]ReceiverFunc
	handshake    []HandshakeMiddleware
	inboundRaw   []InboundRawMiddleware
	inbound      []InboundMiddleware
	outbound     []OutboundMiddleware
	onConnect    []func(*Socket)
	onDisconnect []func(s *Socket, code int, reason string)
	onRaw        []func(s *Socket, message []byte)
}

// Server is a SocketCluster server. Create it with NewServer, register
// handlers and middleware, then serve it (it is an http.Handler for
// Config.Path).
type Server struct {
	cfg      Config
	log      *slog.Logger
	auth     *auth.Engine
	broker   Broker
	hub      *hub
	metrics  *metrics
	registry *prometheus.Registry
	origins  []string
	allowAll bool
	exchange *Exchange

	regMu sync.Mutex
	h     atomic.Pointer[handlers]

	socketsMu sync.Mutex
	sockets   map[*Socket]struct{}
	nSockets  atomic.Int64
	readers   sync.WaitGroup // a socket's reader until the reaper has finished it
	reaper    reaper

	draining atomic.Bool
	drainMu  sync.Mutex
	drains   map[string]bool // drains running (DrainGateway, DrainClients), by key
	stop     chan struct{}
	writers  *writers
	stopOnce sync.Once
	sweeper  sync.WaitGroup

	// Gateways' tunnel sessions (Config.TunnelToken): their streams are
	// served as connections, by serveWS.
	tunnels      *tunnel.Listener
	tunnelAccept http.Handler
	tunnelHTTP   *http.Server
}

// NewServer validates cfg, connects to the broker and starts the server's
// sweeper. Close or Shutdown releases it.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if len(cfg.Auth.Key) == 0 && len(cfg.Auth.PublicKeyPEM) == 0 {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		cfg.Auth.Key = key
	}
	eng, err := auth.New(cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		auth:    eng,
		sockets: make(map[*Socket]struct{}),
		stop:    make(chan struct{}),
	}
	s.writers = newWriters(s.stop)
	reg := cfg.Registerer
	if reg == nil {
		s.registry = ops.NewRegistry()
		reg = s.registry
	}
	s.metrics = newMetrics(reg)
	s.hub = newHub(s.metrics)
	s.h.Store(&handlers{procedures: map[string]ProcedureFunc{}, receivers: map[string]ReceiverFunc{}})
	for _, o := range strings.FieldsFunc(cfg.Origins, func(r rune) bool { return r == ',' || r == ' ' }) {
		if o == "*:*" {
			s.allowAll = true
		}
		s.origins = append(s.origins, o)
	}
	factory := cfg.Broker
	if factory == nil {
		factory = NewLocalBroker().Attach
	}
	b, err := factory(s.deliver)
	if err != nil {
		return nil, fmt.Errorf("worker: connect broker: %w", err)
	}
	s.broker = b
	s.hub.broker = b
	s.exchange = &Exchange{srv: s}
	s.tunnels = tunnel.NewListener(s.log)
	s.tunnelAccept = s.tunnels.Handler(cfg.TunnelToken)
	s.tunnelHTTP = &http.Server{Handler: http.HandlerFunc(s.serveWS), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	go func() { _ = s.tunnelHTTP.Serve(s.tunnels) }()
	s.sweeper.Add(1)
	go s.sweep()
	return s, nil
}

// Config returns the configuration in effect, defaults applied.
func (s *Server) Config() Config { return s.cfg }

// Auth returns the server's JWT engine (to sign tokens outside a socket,
// for example in an HTTP login endpoint).
func (s *Server) Auth() *auth.Engine { return s.auth }

// Exchange is the server-side publish/subscribe handle.
func (s *Server) Exchange() *Exchange { return s.exchange }

// Clients returns the number of open sockets (handshake done or not).
func (s *Server) Clients() int { return int(s.nSockets.Load()) }

// ChannelCount returns the number of channels with local subscribers.
func (s *Server) ChannelCount() int { return s.hub.channelCount() }

// MetricsHandler serves the server's own Prometheus registry (nil when
// Config.Registerer was set).
func (s *Server) MetricsHandler() http.Handler {
	if s.registry == nil {
		return nil
	}
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
}

// Ready reports whether the server accepts connections.
func (s *Server) Ready() bool { return !s.draining.Load() }

func (s *Server) update(fn func(h *handlers)) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	old := s.h.Load()
	n := *old
	n.procedures = make(map[string]ProcedureFunc, len(old.procedures)+1)
	for k, v := range old.procedures {
		n.procedures[k] = v
	}
	n.receivers = make(map[string]ReceiverFunc, len(old.receivers)+1)
	for k, v := range old.receivers {
		n.receivers[k] = v
	}
	// Slices are appended with a full slice expression below, so the old
	// snapshot is never written to.
	fn(&n)
	s.h.Store(&n)
}

// HandleProcedure serves invokes of the named procedure. An invoke nobody
// handles gets no response (the client times out), as in SocketCluster.
func (s *Server) HandleProcedure(name string, fn ProcedureFunc) {
	s.update(func(h *handlers) { h.procedures[name] = fn })
}

// HandleReceiver handles transmits of the named event.
func (s *Server) HandleReceiver(name string, fn ReceiverFunc) {
	s.update(func(h *handlers) { h.receivers[name] = fn })
}

// UseHandshake adds handshake middleware (HTTP upgrade and #handshake).
func (s *Server) UseHandshake(fn HandshakeMiddleware) {
	s.update(func(h *handlers) { h.handshake = append(h.handshake[:len(h.handshake):len(h.handshake)], fn) })
}

// UseInboundRaw adds middleware that sees every inbound message before it
// is decoded; it may replace the message or block it (the message is then
// dropped).
func (s *Server) UseInboundRaw(fn InboundRawMiddleware) {
	s.update(func(h *handlers) { h.inboundRaw = append(h.inboundRaw[:len(h.inboundRaw):len(h.inboundRaw)], fn) })
}

// UseInbound adds middleware for transmits, invokes, subscribes, client
// publishes and authentication. Middleware runs in the order added.
func (s *Server) UseInbound(fn InboundMiddleware) {
	s.update(func(h *handlers) { h.inbound = append(h.inbound[:len(h.inbound):len(h.inbound)], fn) })
}

// UseOutbound adds middleware that sees each channel message before it is
// delivered to one socket; blocking it skips that socket.
func (s *Server) UseOutbound(fn OutboundMiddleware) {
	s.update(func(h *handlers) { h.outbound = append(h.outbound[:len(h.outbound):len(h.outbound)], fn) })
}

// OnConnect registers fn to run when a socket completes its handshake,
// before its next message is processed.
func (s *Server) OnConnect(fn func(*Socket)) {
	s.update(func(h *handlers) { h.onConnect = append(h.onConnect[:len(h.onConnect):len(h.onConnect)], fn) })
}

// OnDisconnect registers fn to run when a socket that completed its
// handshake closes.
func (s *Server) OnDisconnect(fn func(s *Socket, code int, reason string)) {
	s.update(func(h *handlers) {
		h.onDisconnect = append(h.onDisconnect[:len(h.onDisconnect):len(h.onDisconnect)], fn)
	})
}

// OnRaw registers fn for messages that are not SocketCluster frames.
func (s *Server) OnRaw(fn func(s *Socket, message []byte)) {
	s.update(func(h *handlers) { h.onRaw = append(h.onRaw[:len(h.onRaw):len(h.onRaw)], fn) })
}

// ServeHTTP accepts WebSocket connections on Config.Path, and gateways'
// tunnel sessions (whose streams carry more of them) on tunnel.Path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tunnel.Path {
		if s.draining.Load() {
			http.Error(w, "server is draining", http.StatusServiceUnavailable)
			return
		}
		s.tunnelAccept.ServeHTTP(w, r)
		return
	}
	s.serveWS(w, r)
}

// serveWS accepts a WebSocket connection.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != s.cfg.Path {
		s.metrics.handshakeReject.Inc()
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	if s.draining.Load() {
		s.metrics.handshakeReject.Inc()
		http.Error(w, "server is draining", http.StatusServiceUnavailable)
		return
	}
	if !s.originAllowed(r.Header.Get("Origin")) {
		s.metrics.handshakeReject.Inc()
		http.Error(w, "Failed to authorize socket handshake - Invalid origin: "+r.Header.Get("Origin"), http.StatusForbidden)
		return
	}
	h := s.h.Load()
	if len(h.handshake) > 0 {
		hs := &Handshake{Kind: HandshakeWS, Request: r}
		for _, mw := range h.handshake {
			if err := callMiddleware(s, nil, "handshake middleware", mw, hs); err != nil {
				s.metrics.handshakeReject.Inc()
				if err == errInternal {
					http.Error(w, "Internal Server Error", http.StatusInternalServerError)
					return
				}
				msg := err.Error()
				var ce *codec.Error
				if errors.As(err, &ce) {
					msg = ce.Message
				}
				http.Error(w, msg, http.StatusUnauthorized)
				return
			}
		}
	}
	c, err := upgradeWS(w, r, ws.Options{ReadLimit: s.cfg.HandshakeMaxPayload, Deflate: s.cfg.PerMessageDeflate})
	if err != nil {
		s.metrics.handshakeReject.Inc()
		return // Upgrade has answered
	}
	sock := s.newSocket(c, keptRequest(r))
	s.readers.Add(1)
	// The reader gets a fresh goroutine and this one returns: net/http then
	// lets go of its per-connection state (buffered reader and writer,
	// the grown stack of its serving goroutine), about 8 KiB per socket.
	go sock.readLoop() // the reaper calls s.readers.Done when it has finished the socket
}

// keptRequest is what a socket keeps of its upgrade request for its
// lifetime: the request line, addresses and headers (without those that
// only served the WebSocket handshake itself), not net/http's per-request
// context chain and parsing state (about 1 KiB per idle connection).
func keptRequest(r *http.Request) *http.Request {
	h := make(http.Header, max(len(r.Header)-len(handshakeOnly), 0))
	for k, v := range r.Header {
		if !slices.Contains(handshakeOnly, k) {
			h[k] = v
		}
	}
	return &http.Request{
		Method: r.Method, URL: r.URL, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Header: h, Host: r.Host, RemoteAddr: r.RemoteAddr, RequestURI: r.RequestURI, TLS: r.TLS,
	}
}

// handshakeOnly are the upgrade request's headers a socket does not keep.
var handshakeOnly = []string{"Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions"}

// originAllowed applies the origins option as socketcluster-server does.
func (s *Server) originAllowed(origin string) bool {
	if s.allowAll {
		return true
	}
	host, port := "null", "80"
	if origin != "" && origin != "null" {
		u, err := url.Parse(origin)
		if err != nil {
			return false
		}
		host = u.Hostname()
		port = u.Port()
		if port == "" {
			port = "80"
			if u.Scheme == "https" || u.Scheme == "wss" {
				port = "443"
			}
		}
	}
	for _, o := range s.origins {
		if o == host+":"+port || o == host+":*" || o == "*:"+port {
			return true
		}
	}
	return false
}

func newSocketID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.URLEncoding.EncodeToString(b[:])
}

func (s *Server) addSocket(sock *Socket) {
	s.socketsMu.Lock()
	s.sockets[sock] = struct{}{}
	s.socketsMu.Unlock()
	s.nSockets.Add(1)
	s.metrics.connections.Inc()
	s.metrics.connectsTotal.Inc()
}

func (s *Server) removeSocket(sock *Socket) {
	s.socketsMu.Lock()
	_, ok := s.sockets[sock]
	delete(s.sockets, sock)
	s.socketsMu.Unlock()
	if ok {
		s.nSockets.Add(-1)
		s.metrics.connections.Dec()
	}
}

func (s *Server) snapshotSockets(dst []*Socket) []*Socket {
	s.socketsMu.Lock()
	for sock := range s.sockets {
		dst = append(dst, sock)
	}
	s.socketsMu.Unlock()
	return dst
}

// sweep pings sockets and enforces the ping, handshake and write timeouts. One
// goroutine serves every socket, so an idle connection costs no timer. It
// visits every socket each 100 ms (a visit is a few atomic loads): a
// socket is pinged within 100 ms of its due time, so the pings of sockets
// that connected in the same second do not leave in one burst (with 100,000
// connections and a visit a second, each visit sent 12,500 pings at once
// and fan-out deliveries waited behind them: p99 631 ms).
func (s *Server) sweep() {
	defer s.sweeper.Done()
	tick := min(s.cfg.PingInterval, s.cfg.PingTimeout, s.cfg.HandshakeTimeout, s.cfg.WriteTimeout) / 4
	tick = max(min(tick, 100*time.Millisecond), 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var buf []*Socket
	lastTrim := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		if now.Sub(lastTrim) >= time.Second {
			s.writers.trim()
			lastTrim = now
		}
		buf = s.snapshotSockets(buf[:0])
		for _, sock := range buf {
			sock.tick(now)
		}
		clear(buf)
	}
}

// deliver is the broker's DeliverFunc.
func (s *Server) deliver(channel string, data json.RawMessage) {
	s.hub.deliver(s, channel, data)
}

// publish sends a message to a channel through the broker.
func (s *Server) publish(channel string, data json.RawMessage, done func(error)) {
	s.metrics.publishesIn.Inc()
	s.broker.Publish(channel, data, done)
}

// Close closes every socket at once (no close handshake) and releases the
// broker connection and the sweeper.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.stopOnce.Do(func() {
		close(s.stop)
		_ = s.tunnelHTTP.Close() // no new streams
		for _, sock := range s.snapshotSockets(nil) {
			sock.ws.Close()
		}
		s.tunnels.CloseSessions()
		s.sweeper.Wait()
		_ = s.broker.Close()
	})
	return nil
}

// HealthHandler serves /healthz (alive) and /readyz (accepting, and ready,
// when set, holds).
func (s *Server) HealthHandler(ready func() bool) http.Handler {
	return ops.Handler(nil, func() bool { return s.Ready() && (ready == nil || ready()) })
}

func remoteAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func itoa(n int) string { return strconv.Itoa(n) }
