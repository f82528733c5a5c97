package cluster

import (
	"sync/atomic"

	"github.com/scc-k8s/scc/pkg/ops"
	"github.com/scc-k8s/scc/services/worker"
)

// Join makes a worker service a cluster member: its broker becomes the
// gRPC cluster, its load (open sockets) is reported to state, its /readyz
// waits for a ring and live broker links, and its /metrics also serves
// the cluster metrics. cfg.Logger defaults to the worker's.
func Join(svc *worker.ServiceConfig, cfg Config) {
	var srv atomic.Pointer[worker.Server]
	var cl atomic.Pointer[Cluster]
	if svc.Server.Registerer == nil {
		svc.Server.Registerer = ops.NewRegistry()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = svc.Server.Registerer
	}
	if cfg.Logger == nil {
		cfg.Logger = svc.Server.Logger
	}
	if svc.Server.TunnelToken == "" {
		svc.Server.TunnelToken = cfg.GRPC.Token // gateways present the cluster token
	}
	cfg.Load = func() uint64 {
		if s := srv.Load(); s != nil {
			return uint64(s.Clients())
		}
		return 0
	}
	userReady := svc.Ready
	cfg.Ready = func() bool {
		s := srv.Load()
		return s != nil && s.Ready() && (userReady == nil || userReady())
	}
	cfg.OnGatewayDrain = func(id string) {
		if s := srv.Load(); s != nil {
			s.DrainGateway(id)
		}
	}
	cfg.OnPartition = func() {
		if s := srv.Load(); s != nil {
			s.DrainClients("cut off from a broker")
		}
	}
	svc.Server.Broker = func(deliver worker.DeliverFunc) (worker.Broker, error) {
		c, err := New(cfg, deliver)
		if err == nil {
			cl.Store(c)
		}
		return c, err
	}
	setup := svc.Setup
	svc.Setup = func(s *worker.Server) {
		srv.Store(s)
		if setup != nil {
			setup(s)
		}
	}
	svc.Ready = func() bool {
		c := cl.Load()
		return c != nil && c.Ready() && (userReady == nil || userReady())
	}
}
