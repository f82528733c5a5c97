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
	"time"

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

	cluster.Join(&wc, cluster.Config{ID: "dev-worker", StateAddr: st.Addr().String(), GRPC: gc})
	return worker.Run(ctx, wc)
}
