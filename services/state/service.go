package state

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

	"google.golang.org/grpc"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/ops"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// ServiceConfig runs the state service.
type ServiceConfig struct {
	// Listen is the gRPC address. Default ":9000".
	Listen string
	// Listener, when set, is used instead of Listen.
	Listener net.Listener
	// HTTPListen, when set, serves /healthz, /readyz and /metrics.
	HTTPListen string
	// GRPC carries the cluster token and TLS.
	GRPC grpcx.Config
	// State configures the server.
	State Config
}

// Node is a running state service.
type Node struct {
	srv    *Server
	gs     *grpc.Server
	hs     *http.Server
	ln     net.Listener
	served chan struct{}
	once   sync.Once
}

// Start serves the state service.
func Start(cfg ServiceConfig) (*Node, error) {
	if cfg.Listen == "" {
		cfg.Listen = ":9000"
	}
	reg := ops.NewRegistry()
	if cfg.State.Registerer == nil {
		cfg.State.Registerer = reg
	}
	opts, err := grpcx.ServerOptions(cfg.GRPC)
	if err != nil {
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("state: listen: %w", err)
		}
	}
	n := &Node{srv: New(cfg.State), gs: grpc.NewServer(opts...), ln: ln, served: make(chan struct{})}
	sccv1.RegisterStateServer(n.gs, n.srv)
	go func() { _ = n.gs.Serve(ln); close(n.served) }()
	if cfg.HTTPListen != "" {
		mux := ops.Handler(reg, nil)
		mux.HandleFunc("/cluster", n.srv.serveView)
		n.hs = ops.Serve(cfg.HTTPListen, mux)
	}
	n.srv.log.Info("state serving", "addr", ln.Addr().String())
	return n, nil
}

// Addr is the gRPC listener's address.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Server is the state server.
func (n *Node) Server() *Server { return n.srv }

// Stop ends every stream at once (members keep their last view and rejoin
// the next state service).
func (n *Node) Stop() {
	n.once.Do(func() {
		n.srv.Freeze()
		n.gs.Stop()
		<-n.served
		n.srv.Close()
		if n.hs != nil {
			_ = n.hs.Close()
		}
	})
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg ServiceConfig) error {
	n, err := Start(cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	n.Stop()
	return nil
}
