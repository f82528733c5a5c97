package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/pkg/ops"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// ServiceConfig runs a broker as a cluster member.
type ServiceConfig struct {
	// ID names the broker in the ring. Default: hostname plus a random suffix.
	ID string
	// Listen is the gRPC address. Default ":9100".
	Listen string
	// Listener, when set, is used instead of Listen.
	Listener net.Listener
	// Advertise is the address workers dial. Default: the listener's
	// address (with the POD_IP environment variable as host when set).
	Advertise string
	// HTTPListen, when set, serves /healthz, /readyz and /metrics.
	HTTPListen string
	// StateAddr is the state service's address. Required.
	StateAddr string
	// GRPC carries the cluster token and TLS.
	GRPC grpcx.Config
	// Broker configures the router.
	Broker Config
	// DrainTimeout bounds the drain on shutdown. Default 30s.
	DrainTimeout time.Duration
}

// Node is a running broker service.
type Node struct {
	cfg    ServiceConfig
	srv    *Server
	gs     *grpc.Server
	hs     *http.Server
	mem    *member.Client
	ln     net.Listener
	log    *slog.Logger
	reg    *prometheus.Registry
	id     string
	served chan struct{}

	mu       sync.Mutex
	view     *sccv1.ClusterView
	draining bool
	viewCh   chan struct{}
	stopOnce sync.Once
}

// Start serves the broker and joins the cluster.
func Start(cfg ServiceConfig) (*Node, error) {
	if cfg.StateAddr == "" {
		return nil, fmt.Errorf("broker: a state address is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":9100"
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.ID == "" {
		cfg.ID = member.DefaultID("broker")
	}
	if cfg.Broker.Logger == nil {
		cfg.Broker.Logger = slog.Default()
	}
	reg := ops.NewRegistry()
	if cfg.Broker.Registerer == nil {
		cfg.Broker.Registerer = reg
	}
	n := &Node{cfg: cfg, log: cfg.Broker.Logger.With("broker", cfg.ID), reg: reg, id: cfg.ID,
		viewCh: make(chan struct{}, 1), served: make(chan struct{})}
	n.srv = New(cfg.Broker)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "scc", Subsystem: "broker", Name: "channels", Help: "Channels with subscribers on this broker.",
	}, func() float64 { return float64(n.srv.Channels()) }))
	opts, err := grpcx.ServerOptions(cfg.GRPC)
	if err != nil {
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("broker: listen: %w", err)
		}
	}
	n.ln = ln
	n.gs = grpc.NewServer(opts...)
	sccv1.RegisterBrokerServer(n.gs, n.srv)
	go func() { _ = n.gs.Serve(ln); close(n.served) }()
	adv := cfg.Advertise
	if adv == "" {
		adv = member.AdvertiseAddr(ln.Addr().String())
	}
	n.mem, err = member.Start(member.Config{
		StateAddr: cfg.StateAddr,
		GRPC:      cfg.GRPC,
		Member:    &sccv1.Member{Id: cfg.ID, Role: sccv1.Role_ROLE_BROKER, Address: adv},
		OnView:    n.onView,
		Logger:    n.log,
	})
	if err != nil {
		n.gs.Stop()
		return nil, err
	}
	if cfg.HTTPListen != "" { // after the membership exists: /readyz asks it
		n.hs = ops.Serve(cfg.HTTPListen, ops.Handler(reg, n.mem.Joined))
	}
	n.log.Info("broker serving", "addr", ln.Addr().String(), "advertise", adv, "state", cfg.StateAddr)
	return n, nil
}

// ID is the broker's ring id.
func (n *Node) ID() string { return n.id }

// Addr is the gRPC listener's address.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Server is the router.
func (n *Node) Server() *Server { return n.srv }

func (n *Node) onView(v *sccv1.ClusterView) {
	n.mu.Lock()
	n.view = v
	n.mu.Unlock()
	if !v.Settling {
		ids := func(ms []*sccv1.Member) []string {
			out := make([]string, len(ms))
			for i, m := range ms {
				out[i] = m.Id
			}
			return out
		}
		n.srv.SetRing(n.id, v.Epoch, ids(v.Brokers), ids(v.PrevBrokers))
		n.srv.SetWorkers(v.Workers)
	}
	select {
	case n.viewCh <- struct{}{}:
	default:
	}
}

// released reports whether the ring no longer uses this broker.
func (n *Node) released() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	v := n.view
	if v == nil || v.Settling {
		return false
	}
	in := func(ms []*sccv1.Member) bool {
		return slices.ContainsFunc(ms, func(m *sccv1.Member) bool { return m.Id == n.id })
	}
	return v.Phase == sccv1.Phase_PHASE_STABLE && !in(v.Brokers) && !in(v.PrevBrokers)
}

// Drain asks state to move this broker's channels away, keeps serving
// until the migration that removes it has finished (or ctx ends), then
// stops.
func (n *Node) Drain(ctx context.Context) {
	n.log.Info("broker draining")
	n.mem.Drain()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	for !n.released() {
		select {
		case <-ctx.Done():
			n.log.Warn("drain timed out; stopping anyway")
			n.stop()
			return
		case <-n.viewCh:
		case <-time.After(100 * time.Millisecond):
		}
	}
	n.log.Info("broker released by the ring; stopping")
	// Let the links end by themselves (workers close theirs once their
	// migration is done): what is queued on them is still sent.
	graceful := make(chan struct{})
	go func() { n.gs.GracefulStop(); close(graceful) }()
	select {
	case <-graceful:
	case <-ctx.Done():
		n.log.Warn("links still open at the drain deadline; stopping anyway")
	}
	n.stop()
}

// Kill stops at once, as a crash would (no drain).
func (n *Node) Kill() { n.stop() }

func (n *Node) stop() {
	n.stopOnce.Do(func() {
		n.gs.Stop()
		n.mem.Close()
		if n.hs != nil {
			_ = n.hs.Close()
		}
		<-n.served
	})
}

// Run starts a broker and drains it when ctx is done.
func Run(ctx context.Context, cfg ServiceConfig) error {
	n, err := Start(cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	n.Drain(context.Background())
	return nil
}
