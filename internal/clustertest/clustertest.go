// Package clustertest starts a whole cluster in one test process: a state
// service, brokers, workers and gateways, each on 127.0.0.1 port 0 over real gRPC,
// and cleans every one of them up when the test ends.
package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/broker"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/state"
	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

// Options sizes the cluster.
type Options struct {
	Brokers, Workers int
	// SettleWindow of the state service (default 300ms; the first start
	// skips it).
	SettleWindow time.Duration
	// Token is the cluster token (default "test-token").
	Token string
	// Worker is the base configuration of every worker.
	Worker worker.Config
	// Link is the base configuration of every worker's cluster link (its
	// ID, StateAddr, GRPC and Logger are set by the harness).
	Link cluster.Config
	// Broker is the base configuration of every broker (its Logger is set
	// by the harness).
	Broker broker.Config
	// Setup registers handlers on each worker.
	Setup func(*worker.Server)
	// StateDelay, when set, starts the brokers and workers first, against
	// an address where nothing listens yet, and state that much later.
	StateDelay time.Duration
}

// Cluster is a running test cluster.
type Cluster struct {
	t    testing.TB
	opts Options
	GRPC grpcx.Config
	Log  *slog.Logger

	// StateStarted is when state began serving, with Options.StateDelay.
	StateStarted time.Time

	mu        sync.Mutex
	State     *state.Node
	StateAddr string
	Brokers   []*broker.Node
	Workers   []*Worker
	Gateways  []*Gateway
	nBrokers  int
	nWorkers  int
	nGateways int
}

// Worker is one worker: its SocketCluster server and its cluster link.
type Worker struct {
	ID      string
	Server  *worker.Server
	Cluster *cluster.Cluster
	HTTP    *httptest.Server
	URL     string
	once    sync.Once
}

// Start brings up state, the brokers and the workers, and waits until the
// ring holds every broker.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Token == "" {
		opts.Token = "test-token"
	}
	if opts.SettleWindow == 0 {
		opts.SettleWindow = 300 * time.Millisecond
	}
	level := slog.LevelWarn
	if os.Getenv("SCC_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	var out io.Writer = os.Stderr
	c := &Cluster{t: t, opts: opts, GRPC: grpcx.Config{Token: opts.Token},
		Log: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))}
	if opts.StateDelay > 0 {
		// Reserve an address for state: members dial it before it serves.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.StateAddr = ln.Addr().String()
		ln.Close()
	} else {
		c.startState(-1)
	}
	t.Cleanup(c.Stop)
	for i := 0; i < opts.Brokers; i++ {
		c.AddBroker()
	}
	for i := 0; i < opts.Workers; i++ {
		c.AddWorker()
	}
	if opts.StateDelay > 0 {
		time.Sleep(opts.StateDelay)
		c.StateStarted = time.Now()
		c.startState(-1)
	}
	c.WaitStable(opts.Brokers)
	return c
}

func (c *Cluster) startState(settle time.Duration) {
	addr := c.StateAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // a restart reuses the address: retry while it frees
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("state listen: %v", err)
	}
	n, err := state.Start(state.ServiceConfig{Listener: ln, GRPC: c.GRPC,
		State: state.Config{Logger: c.Log.With("component", "state"), SettleWindow: settle, Lease: 3 * time.Second, Debounce: 50 * time.Millisecond}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.State = n
	c.StateAddr = n.Addr().String()
	c.mu.Unlock()
}

// RestartState stops the state service and starts a new one on the same
// address, with the settle window of Options.
func (c *Cluster) RestartState(down time.Duration) {
	c.mu.Lock()
	old := c.State
	c.mu.Unlock()
	old.Stop()
	time.Sleep(down)
	c.startState(c.opts.SettleWindow)
}

// AddBroker starts one more broker.
func (c *Cluster) AddBroker() *broker.Node {
	c.mu.Lock()
	c.nBrokers++
	id := fmt.Sprintf("broker-%d", c.nBrokers)
	c.mu.Unlock()
	bc := c.opts.Broker
	bc.Logger = c.Log.With("component", id)
	n, err := broker.Start(broker.ServiceConfig{ID: id, Listen: "127.0.0.1:0", StateAddr: c.StateAddr, GRPC: c.GRPC,
		DrainTimeout: 20 * time.Second, Broker: bc})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.Brokers = append(c.Brokers, n)
	c.mu.Unlock()
	return n
}

func (c *Cluster) removeBroker(n *broker.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range c.Brokers {
		if b == n {
			c.Brokers = append(c.Brokers[:i:i], c.Brokers[i+1:]...)
			return
		}
	}
}

// DrainBroker drains a broker the way SIGTERM does and returns when it
// has stopped.
func (c *Cluster) DrainBroker(n *broker.Node) {
	c.removeBroker(n)
	n.Drain(c.t.Context())
}

// KillBroker stops a broker at once, without drain.
func (c *Cluster) KillBroker(n *broker.Node) {
	c.removeBroker(n)
	n.Kill()
}

// AddWorker starts one more worker.
func (c *Cluster) AddWorker() *Worker { return c.AddWorkerWith(nil) }

// AddWorkerWith starts one more worker whose cluster link configuration
// edit may change (a fault-injecting dialer, say).
func (c *Cluster) AddWorkerWith(edit func(*cluster.Config)) *Worker {
	c.mu.Lock()
	c.nWorkers++
	id := fmt.Sprintf("worker-%d", c.nWorkers)
	c.mu.Unlock()
	w := &Worker{ID: id}
	cfg := c.opts.Worker
	if cfg.Auth.Key == nil {
		cfg.Auth.Key = []byte("test-secret")
	}
	cfg.Logger = c.Log.With("component", id)
	ts := httptest.NewUnstartedServer(nil)
	// The cluster link's goroutines ask for the server while NewServer is
	// still returning it.
	var srv atomic.Pointer[worker.Server]
	cfg.Broker = func(deliver worker.DeliverFunc) (worker.Broker, error) {
		lc := c.opts.Link
		lc.ID, lc.StateAddr, lc.GRPC, lc.Logger = id, c.StateAddr, c.GRPC, cfg.Logger
		// Gateways route to it: its address, readiness and drains.
		lc.Advertise = ts.Listener.Addr().String()
		lc.Ready = func() bool { s := srv.Load(); return s != nil && s.Ready() }
		lc.Load = func() uint64 { // as cluster.Join reports it
			if s := srv.Load(); s != nil {
				return uint64(s.Clients())
			}
			return 0
		}
		lc.OnGatewayDrain = func(id string) {
			if s := srv.Load(); s != nil {
				s.DrainGateway(id)
			}
		}
		if edit != nil {
			edit(&lc)
		}
		cl, err := cluster.New(lc, deliver)
		w.Cluster = cl
		return cl, err
	}
	ws, err := worker.NewServer(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.opts.Setup != nil {
		c.opts.Setup(ws)
	}
	w.Server = ws
	srv.Store(ws)
	ts.Config.Handler = ws
	ts.Start()
	w.HTTP = ts
	w.URL = "ws" + strings.TrimPrefix(w.HTTP.URL, "http") + ws.Config().Path
	c.mu.Lock()
	c.Workers = append(c.Workers, w)
	c.mu.Unlock()
	return w
}

// KillWorker stops a worker at once: its sockets drop, its cluster
// membership ends.
func (c *Cluster) KillWorker(w *Worker) {
	c.mu.Lock()
	for i, x := range c.Workers {
		if x == w {
			c.Workers = append(c.Workers[:i:i], c.Workers[i+1:]...)
		}
	}
	c.mu.Unlock()
	w.stop()
}

func (w *Worker) stop() {
	w.once.Do(func() {
		w.HTTP.CloseClientConnections()
		w.Server.Close()
		w.HTTP.Close()
	})
}

// DrainWorker stops a worker as SIGTERM does: it leaves the gateways'
// routing, closes its sockets at its drain pace (each receiving until its
// close frame), and goes once they are gone or deadline has passed.
func (c *Cluster) DrainWorker(w *Worker, deadline time.Duration) {
	c.mu.Lock()
	for i, x := range c.Workers {
		if x == w {
			c.Workers = append(c.Workers[:i:i], c.Workers[i+1:]...)
		}
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_ = w.Server.Shutdown(ctx)
	w.stop()
}

// Gateway is one gateway of the cluster.
type Gateway struct {
	*gateway.Gateway
	// URL is its SocketCluster endpoint (ws://127.0.0.1:port/socketcluster/).
	URL string
}

// AddGateway starts a gateway on a loopback port; cfg's StateAddr, GRPC,
// Listen and Logger are filled in. It is stopped (drained) with the
// cluster, or earlier with its Shutdown.
func (c *Cluster) AddGateway(cfg gateway.Config) *Gateway {
	c.t.Helper()
	c.mu.Lock()
	c.nGateways++
	if cfg.ID == "" {
		cfg.ID = fmt.Sprintf("gateway-%d", c.nGateways)
	}
	c.mu.Unlock()
	cfg.StateAddr, cfg.GRPC = c.StateAddr, c.GRPC
	if cfg.Listen == "" && cfg.Listener == nil {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = c.Log.With("component", cfg.ID)
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	g, err := gateway.Start(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	scheme := "ws"
	if cfg.TLSCertFile != "" {
		scheme = "wss"
	}
	gw := &Gateway{Gateway: g, URL: scheme + "://" + g.Addr().String() + "/socketcluster/"}
	c.mu.Lock()
	c.Gateways = append(c.Gateways, gw)
	c.mu.Unlock()
	return gw
}

// WaitRoutable waits until every gateway routes to n workers.
func (c *Cluster) WaitRoutable(n int) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c.mu.Lock()
		gws := append([]*Gateway(nil), c.Gateways...)
		c.mu.Unlock()
		ok := true
		for _, g := range gws {
			r := 0
			for _, w := range g.Workers() {
				if w.Ready && !w.Draining {
					r++
				}
			}
			ok = ok && r == n
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("gateways do not route to %d workers", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitStable waits until state has a stable ring of n brokers that every
// worker applies.
func (c *Cluster) WaitStable(n int) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		st := c.State
		workers := append([]*Worker(nil), c.Workers...)
		c.mu.Unlock()
		v := st.Server().View()
		ok := !v.Settling && v.Phase == sccv1.Phase_PHASE_STABLE && len(v.Brokers) == n && len(v.Workers) == len(workers)
		for _, w := range workers {
			e, p := w.Cluster.Epoch()
			ok = ok && e == v.Epoch && p == sccv1.Phase_PHASE_STABLE
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not stable with %d brokers: state view epoch %d phase %v brokers %d workers %d settling %v",
				n, v.Epoch, v.Phase, len(v.Brokers), len(v.Workers), v.Settling)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop tears everything down.
func (c *Cluster) Stop() {
	c.mu.Lock()
	workers, brokers, st, gws := c.Workers, c.Brokers, c.State, c.Gateways
	c.Workers, c.Brokers, c.Gateways = nil, nil, nil
	c.mu.Unlock()
	for _, g := range gws {
		g.Shutdown()
	}
	for _, w := range workers {
		w.stop()
	}
	for _, b := range brokers {
		b.Kill()
	}
	if st != nil {
		st.Stop()
	}
}
