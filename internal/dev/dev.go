// Package dev runs the whole system in one process for a laptop: a state
// service, one broker, a worker and the gateway, talking over real gRPC on
// loopback. The gateway serves the configured address: the SocketCluster
// endpoint and the demo chat page go through it to the worker (on a
// loopback port of its own); /healthz, /readyz and /metrics are the
// gateway's.
package dev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/services/broker"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/state"
	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/cluster"
	"github.com/scc-k8s/scc/services/worker/demo"
)

// Config is the dev runner's configuration.
type Config struct {
	// Worker configures the embedded worker; its Listen defaults to ":8000".
	Worker worker.ServiceConfig
	// Standalone runs the worker alone on an in-process broker, serving
	// the address itself (no state, broker or gateway).
	Standalone bool
	// Gateway configures the gateway; its Listen, StateAddr and GRPC are
	// set by Run.
	Gateway gateway.Config
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

	wl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gwc := cfg.Gateway
	gwc.Listen, gwc.Listener, gwc.StateAddr, gwc.GRPC = wc.Listen, wc.Listener, st.Addr().String(), gc
	if gwc.Listen == "" {
		gwc.Listen = ":8000"
	}
	if gwc.ID == "" {
		gwc.ID = "dev-gateway"
	}
	if gwc.Logger == nil {
		gwc.Logger = log
	}
	if gwc.DrainTimeout == 0 {
		gwc.DrainTimeout = 5 * time.Second
	}
	wc.Listener, wc.Listen = wl, ""
	wc.Server.TrustedProxies = append(wc.Server.TrustedProxies, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
	cluster.Join(&wc, cluster.Config{ID: "dev-worker", StateAddr: st.Addr().String(), Advertise: wl.Addr().String(), GRPC: gc})

	gctx, stopGateway := context.WithCancel(ctx)
	defer stopGateway()
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	gwErr, wErr := make(chan error, 1), make(chan error, 1)
	go func() { gwErr <- gateway.Run(gctx, gwc) }()
	go func() { wErr <- worker.Run(wctx, wc) }()
	// Either ending (ctx, or a failure such as a port in use) ends both.
	var gerr, werr error
	select {
	case gerr = <-gwErr:
		stopWorker()
		werr = <-wErr
	case werr = <-wErr:
		stopGateway()
		gerr = <-gwErr
	}
	return errors.Join(gerr, werr)
}
