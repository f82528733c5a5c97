// Package dev runs the whole system in one process for a laptop: today a
// worker on an in-process broker, serving the SocketCluster endpoint, the
// demo chat page, /healthz, /readyz and /metrics on one address.
package dev

import (
	"context"

	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/demo"
)

// Config is the dev runner's configuration.
type Config struct {
	// Worker configures the embedded worker; its Listen defaults to ":8000".
	Worker worker.ServiceConfig
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	wc := cfg.Worker
	if wc.Extra == nil {
		wc.Extra = demo.Handler()
	}
	return worker.Run(ctx, wc)
}
