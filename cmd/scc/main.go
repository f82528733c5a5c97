// Command scc runs the parts of an scc cluster: `scc dev` runs all of it in
// one process; `scc worker` runs the SocketCluster server. Every flag has an
// environment-variable twin (SCC_ and the flag's name in capitals).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/scc-k8s/scc/internal/dev"
	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/services/worker"
)

const usage = `usage: scc <command> [flags]

commands:
  dev      run everything on one machine: the SocketCluster endpoint, the demo
           page at http://localhost:8000/, /healthz, /readyz and /metrics
  worker   run the SocketCluster server (worker)

Run 'scc <command> -h' for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "dev":
		err = runDev(ctx, os.Args[2:])
	case "worker":
		err = runWorker(ctx, os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "scc: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "scc:", err)
		os.Exit(1)
	}
}

// workerFlags registers the worker's flags and returns a function that
// builds its configuration once the flags are parsed.
func workerFlags(f *flags, defListen string) func() (worker.ServiceConfig, error) {
	listen := f.String("listen", defListen, "address to serve on")
	authKey := f.String("auth-key", "", "JWT HMAC secret shared by every worker (default: random, this process only)")
	authAlg := f.String("auth-algorithm", "HS256", "JWT algorithm: HS256, HS384, HS512, RS256 or ES256")
	privKey := f.String("auth-private-key-file", "", "PEM private key for RS256/ES256")
	pubKey := f.String("auth-public-key-file", "", "PEM public key for RS256/ES256")
	authExpiry := f.Duration("auth-default-expiry", auth.DefaultExpiry, "token lifetime when it has no exp claim")
	proto := f.Int("protocol-version", 2, "SocketCluster protocol version: 1 (clients <= 14) or 2")
	path := f.String("path", "/socketcluster/", "WebSocket endpoint path")
	pingInterval := f.Duration("ping-interval", 8*time.Second, "how often to ping each socket")
	pingTimeout := f.Duration("ping-timeout", 0, "close a socket silent for this long (default 20s for protocol 1, 30s for 2)")
	handshakeTimeout := f.Duration("handshake-timeout", 10*time.Second, "close a socket without #handshake after this long")
	allowPublish := f.Bool("allow-client-publish", true, "let clients publish to channels")
	origins := f.String("origins", "*:*", "allowed origins: host:port, host:*, *:port, separated by commas")
	chanLimit := f.Int("socket-channel-limit", 1000, "max channels per socket (-1: unlimited)")
	maxPayload := f.Int("max-payload", 1<<20, "max inbound WebSocket message size in bytes")
	maxPending := f.Int("max-pending-bytes", 8<<20, "outbound bytes queued per socket before it is closed as a slow consumer")
	inboundRate := f.Float("inbound-rate", 0, "max inbound messages per second per socket (0: no limit)")
	logLevel := f.String("log-level", "info", "debug, info, warn or error")
	return func() (worker.ServiceConfig, error) {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return worker.ServiceConfig{}, fmt.Errorf("--log-level: %w", err)
		}
		logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
		ac := auth.Config{Algorithm: *authAlg, Key: []byte(*authKey), DefaultExpiry: *authExpiry}
		if strings.HasPrefix(strings.ToUpper(*authAlg), "HS") && *authKey == "" {
			logger.Warn("no --auth-key: using a random JWT key; tokens will not work on other workers or after a restart")
		}
		for _, kf := range []struct {
			path string
			dst  *[]byte
		}{{*privKey, &ac.PrivateKeyPEM}, {*pubKey, &ac.PublicKeyPEM}} {
			if kf.path == "" {
				continue
			}
			b, err := os.ReadFile(kf.path)
			if err != nil {
				return worker.ServiceConfig{}, err
			}
			*kf.dst = b
		}
		if *authKey == "" {
			ac.Key = nil
		}
		return worker.ServiceConfig{
			Listen: *listen,
			Server: worker.Config{
				Path:                  *path,
				ProtocolVersion:       *proto,
				PingInterval:          *pingInterval,
				PingTimeout:           *pingTimeout,
				HandshakeTimeout:      *handshakeTimeout,
				DisallowClientPublish: !*allowPublish,
				Origins:               *origins,
				SocketChannelLimit:    *chanLimit,
				MaxPayload:            int64(*maxPayload),
				MaxPendingBytes:       *maxPending,
				InboundRate:           *inboundRate,
				Auth:                  ac,
				Logger:                logger,
			},
		}, nil
	}
}

func runWorker(ctx context.Context, args []string) error {
	f := newFlags("scc worker")
	build := workerFlags(f, ":8000")
	if err := f.Parse(args); err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	return worker.Run(ctx, cfg)
}

func runDev(ctx context.Context, args []string) error {
	f := newFlags("scc dev")
	build := workerFlags(f, ":8000")
	if err := f.Parse(args); err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	return dev.Run(ctx, dev.Config{Worker: cfg})
}
