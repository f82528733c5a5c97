// Package dev runs the whole system in one process for a laptop: a state
// service, one broker and a worker, talking over real gRPC on loopback, the
// worker serving the SocketCluster endpoint, the demo chat page, /healthz,
// /readyz and /metrics on one address.
package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/services/broker"
	"github.com/scc-k8s/scc/services/state"
	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/cluster"
	"github.com/scc-k8s/scc/services/worker/demo"
)

// Config is the dev runner's configuration.
type Config struct {
	// Worker configures the embedded worker; its Listen defaults to ":8000".
	Worker worker.ServiceConfig
	// Standalone runs the worker on an in-process broker instead of the
	// state + broker pair over gRPC.
	Standalone bool
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	wc := cfg.Worker
	if wc.Extra == nil {
		wc.Extra = demo.Handler()
	}
	if cfg.Standalone {
		return worker.Run(ctx, wc)
	}
	log := wc.Server.Logger
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	gc := grpcx.Config{Token: hex.EncodeToString(tok[:])}

	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	st, err := state.Start(state.ServiceConfig{Listener: sl, GRPC: gc, State: state.Config{Logger: log, SettleWindow: -1}})
	if err != nil {
		return err
	}
	defer st.Stop()
	br, err := broker.Start(broker.ServiceConfig{ID: "dev-broker", Listen: "127.0.0.1:0", StateAddr: st.Addr().String(),
		GRPC: gc, Broker: broker.Config{Logger: log}, DrainTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer br.Kill()

	var srv atomic.Pointer[worker.Server]
	var cl atomic.Pointer[cluster.Cluster]
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	wc.Server.Registerer = reg
	wc.Server.Broker = func(deliver worker.DeliverFunc) (worker.Broker, error) {
		c, err := cluster.New(cluster.Config{ID: "dev-worker", StateAddr: st.Addr().String(), GRPC: gc, Logger: log, Registerer: reg,
			Load: func() uint64 {
				if s := srv.Load(); s != nil {
					return uint64(s.Clients())
				}
				return 0
			}}, deliver)
		if err == nil {
			cl.Store(c)
		}
		return c, err
	}
	setup := wc.Setup
	wc.Setup = func(s *worker.Server) {
		srv.Store(s)
		if setup != nil {
			setup(s)
		}
	}
	wc.Ready = func() bool { c := cl.Load(); return c != nil && c.Ready() }
	return worker.Run(ctx, wc)
}
