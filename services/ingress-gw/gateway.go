// Package gateway is the cluster's edge (services/ingress-gw): one port for
// HTTP and WebSocket, plain or TLS (the certificate reloaded when its files
// change). It joins state as a gateway and learns the workers from the
// cluster view: their addresses, readiness, draining state and load. Each
// WebSocket upgrade on the SocketCluster path goes to the routable worker
// with the fewest connections; after the worker's 101 the gateway only
// moves bytes, the clients going to a worker carried as streams of a few
// tunnel sessions to it (internal/tunnel) by the relay loops. Other paths go to a worker as plain HTTP with
// X-Forwarded-For and X-Forwarded-Proto; /healthz, /readyz and /metrics
// are the gateway's own (/metrics only on Config.HTTPListen when it is set).
//
// Stopping drains: the gateway reports itself unready, keeps serving for
// Config.DrainDelay (while load balancers take it out), then tells state
// it is draining, and the workers close the sockets it brought at their
// drain pace with a code that makes clients reconnect at once, through
// another gateway. The clients still open at Config.DrainTimeout are told
// the same by the gateway itself (close code 4000, where their worker's
// stream to them is between two frames) and cut a second later at most.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scc-k8s/scc/internal/certreload"
	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/pkg/ops"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// GatewayHeader names the gateway on every upgrade it forwards; workers
// close the sockets of a gateway that drains (worker.GatewayHeader, the
// same name: the gateway does not import the worker).
const GatewayHeader = "X-Scc-Gateway"

// Config configures a gateway. The zero value of a field means its
// default, which its comment states.
type Config struct {
	// Listen is the address to serve on. Default ":8000".
	Listen string
	// Listener, when set, is used instead of listening on Listen.
	Listener net.Listener
	// ReusePort lets several gateways on one host share Listen
	// (SO_REUSEPORT, Linux): the kernel spreads new connections over
	// them, and one that stops or dies gets none. Default false.
	ReusePort bool
	// HTTPListen, when set, serves /healthz, /readyz and /metrics on an
	// address of their own: one gateway's own figures where several share
	// Listen, and off the address the internet reaches. /metrics then
	// leaves Listen (404 there); the probes stay on both.
	HTTPListen string
	// TLSCertFile and TLSKeyFile, when set, serve TLS (https, wss),
	// reloading the pair when the files change.
	TLSCertFile, TLSKeyFile string
	// Path is the SocketCluster WebSocket path routed to workers.
	// Default "/socketcluster/".
	Path string

	// ID names the gateway in the cluster. Default: hostname and a
	// random suffix.
	ID string
	// StateAddr is the state service's address. Required.
	StateAddr string
	// Advertise is the address the gateway reports to state.
	Advertise string
	// GRPC carries the cluster token and TLS towards state.
	GRPC grpcx.Config

	// MaxConnsPerIP caps one client address's open WebSocket connections
	// and in-flight requests (429 beyond). Default 0: no limit.
	MaxConnsPerIP int
	// UpgradeRate caps WebSocket upgrades per second over the whole
	// gateway (503 with Retry-After beyond), with bursts of UpgradeBurst
	// (default: one second's worth). Default 0: no limit.
	UpgradeRate  float64
	UpgradeBurst int
	// MaxHeaderBytes caps a request's header (431 beyond). Default 16 KiB.
	MaxHeaderBytes int
	// ReadHeaderTimeout closes a connection whose request header has not
	// arrived in this long (slowloris). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for this
	// long. Default 60s.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to a worker and its answer to the
	// upgrade. Default 5s.
	DialTimeout time.Duration
	// Retries is how many other workers an upgrade tries when one cannot
	// be dialled or is draining. Default 2.
	Retries int
	// NoWorkerWait is how long a request waits for a worker to route to
	// when none is routable (a gateway that has just started and has no
	// cluster view yet; every worker briefly unready) before it is
	// answered 503: a client refused goes into its reconnect backoff
	// (seconds; socketcluster-client's default is 10-20 s). Default 2s;
	// negative: refuse at once.
	NoWorkerWait time.Duration
	// DisableTunnels gives every plain client connection a socket of its
	// own to its worker. Default false: the clients going to a worker
	// share a few tunnel sessions (internal/tunnel), one per relay loop,
	// opened with GRPC.Token.
	DisableTunnels bool

	// DrainDelay is how long a stopping gateway keeps serving while it
	// reports itself unready, before it asks workers to close its
	// sockets. Default 0.
	DrainDelay time.Duration
	// DrainTimeout bounds the drain: the clients still connected then are
	// told to come back at once (close code 4000) and cut a second later
	// at most. Default 30s.
	DrainTimeout time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives metrics; default a registry of the gateway's own
	// (with Go and process collectors), served on /metrics.
	Registerer prometheus.Registerer
	// OnListen, when set, is called with the address being served.
	OnListen func(net.Addr)
}

func (c *Config) setDefaults() error {
	if c.StateAddr == "" {
		return errors.New("gateway: a state address is required")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("gateway: a TLS certificate and key go together")
	}
	if c.Listen == "" {
		c.Listen = ":8000"
	}
	if c.Path == "" {
		c.Path = "/socketcluster/"
	}
	if c.ID == "" {
		c.ID = member.DefaultID("gateway")
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 2
	}
	if c.NoWorkerWait == 0 {
		c.NoWorkerWait = 2 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Gateway is a running gateway.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	gather prometheus.Gatherer
	ops    http.Handler // /healthz, /readyz, /metrics
	opsHS  *http.Server // HTTPListen's server, if any
	bal    *balancer
	mem    *member.Client
	perIP  perIP
	rate   *bucket
	tls    bool
	rp     *httputil.ReverseProxy
	relays *relays // nil: every tunnel is pumped by goroutines

	hs       *http.Server
	ln       net.Listener
	errc     chan error
	stopOnce sync.Once
	draining atomic.Bool
	cutting  atomic.Bool // the drain deadline has passed

	connsMu sync.Mutex
	conns   map[*proxied]struct{}
	nConns  atomic.Int64
	pumps   sync.WaitGroup
}

// proxied is one upgraded connection.
type proxied struct {
	client, worker net.Conn
	tail           frameTail // the worker's frames to the client
}

// Run serves until ctx is done, then drains.
func Run(ctx context.Context, cfg Config) error {
	g, err := Start(cfg)
	if err != nil {
		return err
	}
	select {
	case err := <-g.errc:
		g.mem.Close()
		g.closeOps()
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	g.Shutdown()
	return nil
}

// Start serves in the background; Shutdown drains and stops.
func Start(cfg Config) (*Gateway, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger.With("gateway", cfg.ID), bal: newBalancer(),
		perIP: perIP{limit: cfg.MaxConnsPerIP}, rate: newBucket(cfg.UpgradeRate, cfg.UpgradeBurst),
		conns: make(map[*proxied]struct{})}
	reg := cfg.Registerer
	if reg == nil {
		reg = ops.NewRegistry()
	}
	if gt, ok := reg.(prometheus.Gatherer); ok {
		g.gather = gt
	}
	g.m = newMetrics(reg)
	in, out := g.m.bytes.WithLabelValues("in"), g.m.bytes.WithLabelValues("out")
	rl, err := newRelays(func(n int64) { in.Add(float64(n)) }, func(n int64) { out.Add(float64(n)) }, g.m.told, &g.cutting)
	if err != nil {
		return nil, fmt.Errorf("gateway: relay: %w", err)
	}
	g.relays = rl
	_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "scc", Subsystem: "gateway", Name: "tunnel_sessions",
		Help: "Tunnel sessions open to workers (each carries many clients' connections).",
	}, func() float64 { return float64(g.TunnelSessions()) }))
	g.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			b := pr.In.Context().Value(backendKey{}).(*backend)
			pr.SetURL(&url.URL{Scheme: "http", Host: b.addr})
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host // the worker sees the name the client used
		},
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout}).DialContext,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.log.Debug("worker request failed", "err", err)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = listen(cfg.Listen, cfg.ReusePort); err != nil {
			g.relays.close()
			return nil, fmt.Errorf("gateway: listen: %w", err)
		}
	}
	if cfg.TLSCertFile != "" {
		tln, err := certreload.Listen(ln, cfg.TLSCertFile, cfg.TLSKeyFile, g.log)
		if err != nil {
			ln.Close()
			g.relays.close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		ln, g.tls = tln, true
	}
	adv := cfg.Advertise
	if adv == "" {
		adv = member.AdvertiseAddr(ln.Addr().String())
	}
	mem, err := member.Start(member.Config{
		StateAddr: cfg.StateAddr,
		GRPC:      cfg.GRPC,
		Member:    &sccv1.Member{Id: cfg.ID, Role: sccv1.Role_ROLE_GATEWAY, Address: adv},
		Load:      func() uint64 { return uint64(g.nConns.Load()) },
		Ready:     g.ready,
		OnView:    g.onView,
		Logger:    g.log,
	})
	if err != nil {
		ln.Close()
		g.relays.close()
		return nil, err
	}
	g.mem = mem
	g.ops = ops.Handler(g.gather, g.ready)
	if cfg.HTTPListen != "" { // after the membership exists: /readyz asks it
		g.opsHS = ops.Serve(cfg.HTTPListen, g.ops)
	}

	track := &connTrack{g: g, conns: make(map[net.Conn]*atomic.Bool)}
	hs := &http.Server{
		Handler:           g,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ConnContext:       track.context,
		ConnState:         track.state,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	g.hs, g.ln, g.errc = hs, ln, make(chan error, 1)
	go func() { g.errc <- hs.Serve(ln) }()
	scheme := "ws"
	if g.tls {
		scheme = "wss"
	}
	g.log.Info("gateway serving", "addr", ln.Addr().String(), "scheme", scheme, "path", cfg.Path, "state", cfg.StateAddr)
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	return g, nil
}

// TunnelSessions is the number of tunnel sessions open to workers.
func (g *Gateway) TunnelSessions() int { return g.relays.sessionsCount() }

// Addr is the address the gateway serves.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Shutdown drains the gateway (see the package comment) and stops it.
func (g *Gateway) Shutdown() {
	g.stopOnce.Do(func() {
		g.drain(g.hs)
		g.mem.Close()
		g.closeOps()
	})
}

func (g *Gateway) closeOps() {
	if g.opsHS != nil {
		_ = g.opsHS.Close()
	}
}

// drain is the stopping gateway's sequence (see the package comment).
func (g *Gateway) drain(hs *http.Server) {
	start := time.Now()
	g.draining.Store(true)
	g.log.Info("gateway draining", "connections", g.nConns.Load(), "delay", g.cfg.DrainDelay.String(),
		"deadline", g.cfg.DrainTimeout.String())
	deadline := time.NewTimer(g.cfg.DrainTimeout)
	defer deadline.Stop()
	if g.cfg.DrainDelay > 0 {
		select {
		case <-time.After(g.cfg.DrainDelay):
		case <-deadline.C:
		}
	}
	g.mem.Drain() // workers close this gateway's sockets at their pace
	hctx, cancel := context.WithCancel(context.Background())
	go func() { _ = hs.Shutdown(hctx) }() // no new connections; idle ones close
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
wait:
	for g.nConns.Load() > 0 {
		select {
		case <-deadline.C:
			break wait
		case <-t.C:
		}
	}
	cancel()
	if open := g.nConns.Load(); open > 0 {
		g.log.Warn("gateway drain deadline passed; telling the clients left to come back", "connections", open)
		g.endWorkers()
		for end := time.Now().Add(cutGrace); g.nConns.Load() > 0 && time.Now().Before(end); {
			<-t.C
		}
	}
	left := g.closeAll()
	_ = hs.Close()
	g.pumps.Wait()
	for g.nConns.Load() > 0 { // the relays close what closeAll shut down
		time.Sleep(5 * time.Millisecond)
	}
	g.relays.close()
	if left > 0 {
		g.m.drainCut.WithLabelValues("cut").Add(float64(left))
		g.log.Warn("gateway drain: connections cut", "connections", left)
	}
	g.log.Info("gateway drained", "took", time.Since(start).Round(time.Millisecond).String())
}

// cutGrace is how long the clients told at the drain deadline have to
// get their close frame and go before they are cut.
const cutGrace = time.Second

// endWorkers ends the workers' side of every client the gateway carries:
// each is told with cutFrame to come back at once, where its worker's
// stream to it is between two frames, and closed (relays.endWorkers; the
// pumps do the same when their worker's connection ends).
func (g *Gateway) endWorkers() {
	g.cutting.Store(true)
	g.relays.endWorkers()
	g.connsMu.Lock()
	defer g.connsMu.Unlock()
	for p := range g.conns {
		_ = p.worker.Close()
	}
}

func (g *Gateway) closeAll() int {
	n := g.relays.shutdownAll()
	g.connsMu.Lock()
	defer g.connsMu.Unlock()
	for p := range g.conns {
		_ = p.client.Close()
		_ = p.worker.Close()
	}
	return n + len(g.conns)
}

// onView takes the workers of a cluster view.
func (g *Gateway) onView(v *sccv1.ClusterView) {
	g.bal.update(v.Workers)
	g.m.routableWorkers.Set(float64(g.bal.routable()))
}

// ready: not draining, and some worker to route to.
func (g *Gateway) ready() bool {
	return !g.draining.Load() && g.bal.routable() > 0
}

// Workers returns the workers as the gateway sees them.
func (g *Gateway) Workers() []Worker { return g.bal.snapshot() }

type backendKey struct{}

// ServeHTTP routes one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if served, ok := r.Context().Value(servedKey{}).(*atomic.Bool); ok {
		served.Store(true)
	}
	switch r.URL.Path {
	case "/healthz", "/readyz":
		g.ops.ServeHTTP(w, r)
		return
	case "/metrics":
		if g.cfg.HTTPListen != "" {
			http.NotFound(w, r) // on HTTPListen only, not for the clients to read
			return
		}
		if g.gather != nil {
			g.ops.ServeHTTP(w, r)
			return
		}
	}
	ip := clientIP(r)
	if !g.perIP.acquire(ip) {
		g.m.refused.WithLabelValues("per_ip").Inc()
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return
	}
	if isUpgrade(r) {
		// A tunnel keeps the address's slot until it closes.
		if !g.serveUpgrade(w, r, ip) {
			g.perIP.release(ip)
		}
		return
	}
	defer g.perIP.release(ip)
	b := g.bal.await(r.Context(), g.cfg.NoWorkerWait)
	if b == nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "no worker available", http.StatusServiceUnavailable)
		return
	}
	defer g.bal.done(b)
	g.m.httpRequests.Inc()
	g.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), backendKey{}, b)))
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// connTrack counts connections that closed before a whole request came:
// net/http answers garbage with 400 and oversized headers with 431, and
// closes a slow header at ReadHeaderTimeout without a word. ConnContext
// gives each connection a flag that ServeHTTP sets.
type connTrack struct {
	g     *Gateway
	mu    sync.Mutex
	conns map[net.Conn]*atomic.Bool
}

type servedKey struct{}

func (t *connTrack) context(ctx context.Context, c net.Conn) context.Context {
	served := new(atomic.Bool)
	t.mu.Lock()
	t.conns[c] = served
	t.mu.Unlock()
	return context.WithValue(ctx, servedKey{}, served)
}

func (t *connTrack) state(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	t.mu.Lock()
	served, ok := t.conns[c]
	delete(t.conns, c)
	t.mu.Unlock()
	if ok && st == http.StateClosed && !served.Load() {
		t.g.m.withoutRequest.Inc()
	}
}
