package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scc-k8s/scc/internal/certreload"
	"github.com/scc-k8s/scc/internal/tunnel"
)

// ServiceConfig runs a Server as a network service.
type ServiceConfig struct {
	// Listen is the address to serve on. Default ":8000".
	Listen string
	// Listener, when set, is used instead of listening on Listen.
	Listener net.Listener
	// Server configures the SocketCluster server.
	Server Config
	// Extra, when set, serves every path the service does not (the dev
	// demo page uses it).
	Extra http.Handler
	// TLSCertFile and TLSKeyFile, when set, serve TLS (wss://) with this
	// certificate, reloaded when the files change (a Secret mount).
	TLSCertFile, TLSKeyFile string
	// DrainTimeout bounds the graceful shutdown: sockets still open when
	// it passes are closed at once. Default 30s.
	DrainTimeout time.Duration
	// Setup, when set, is called with the server before it serves, to
	// register procedures and middleware.
	Setup func(*Server)
	// OnListen, when set, is called with the address being served.
	OnListen func(net.Addr)
	// Ready, when set, must also hold for /readyz to answer 200 (the
	// cluster connection uses it).
	Ready func() bool
}

// Run serves the SocketCluster endpoint, /healthz, /readyz and /metrics
// on one address until ctx is done, then drains: new connections are
// refused, sockets are closed with CloseDraining, and Run returns.
func Run(ctx context.Context, cfg ServiceConfig) error {
	if cfg.Listen == "" {
		cfg.Listen = ":8000"
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	srv, err := NewServer(cfg.Server)
	if err != nil {
		return err
	}
	if cfg.Setup != nil {
		cfg.Setup(srv)
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			srv.Close()
			return fmt.Errorf("worker: listen: %w", err)
		}
	}
	scheme := "ws"
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		tln, err := certreload.Listen(ln, cfg.TLSCertFile, cfg.TLSKeyFile, srv.log)
		if err != nil {
			ln.Close()
			srv.Close()
			return fmt.Errorf("worker: %w", err)
		}
		ln, scheme = tln, "wss"
	}
	mux := http.NewServeMux()
	mux.Handle(srv.Config().Path, srv)
	mux.Handle(tunnel.Path, srv) // gateways' tunnel sessions
	health := srv.HealthHandler(cfg.Ready)
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	metricsHandler := srv.MetricsHandler()
	if g, ok := cfg.Server.Registerer.(prometheus.Gatherer); ok && metricsHandler == nil {
		metricsHandler = promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	}
	if metricsHandler != nil {
		mux.Handle("/metrics", metricsHandler)
	}
	if cfg.Extra != nil {
		mux.Handle("/", cfg.Extra)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	srv.log.Info("worker serving", "addr", ln.Addr().String(), "scheme", scheme, "path", srv.Config().Path,
		"protocol", srv.Config().ProtocolVersion)
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	select {
	case err := <-errc:
		srv.Close()
		return fmt.Errorf("worker: serve: %w", err)
	case <-ctx.Done():
	}
	srv.log.Info("worker draining", "sockets", srv.Clients(), "rate", srv.Config().DrainRate,
		"deadline", cfg.DrainTimeout.String())
	start := time.Now()
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		srv.log.Warn("worker drain deadline passed; remaining sockets cut", "after", time.Since(start).String())
	} else {
		srv.log.Info("worker drained", "took", time.Since(start).String())
	}
	if err := hs.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
