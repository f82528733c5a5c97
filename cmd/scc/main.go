// Command scc runs the parts of an scc cluster: `scc dev` runs all of it in
// one process; `scc worker` runs the SocketCluster server. Every flag has an
// environment-variable twin (SCC_ and the flag's name in capitals).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scc-k8s/scc/bench"
	"github.com/scc-k8s/scc/internal/dev"
	"github.com/scc-k8s/scc/internal/kube"
	"github.com/scc-k8s/scc/operator"
	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/services/broker"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/state"
	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

const usage = `usage: scc <command> [flags]

commands:
  dev      run everything on one machine: state, a broker and a worker over
           loopback gRPC; the SocketCluster endpoint, the demo page at
           http://localhost:8000/, /healthz, /readyz and /metrics
  state    run the state service (membership and the broker ring)
  broker   run a broker (channel routing)
  worker   run the SocketCluster server (worker); with --state it joins a
           cluster, without it runs alone on an in-process broker
  gateway  run the ingress gateway: HTTP and WebSocket (plain or TLS) on one
           port, each connection routed to the least-loaded ready worker
  operator run the SocketCluster operator: reconciles SocketCluster
           resources (socketcluster.io/v1alpha1) into clusters
  bootstrap-secrets
           in a pod: create the cluster's Secret (JWT key, cluster token)
           with random values unless it exists (the manifests' install Job)
  bench    load-test a SocketCluster server (ours or any other)

Run 'scc <command> -h' for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if addr := os.Getenv("SCC_PPROF_LISTEN"); addr != "" {
		// Profiling on a separate, explicitly configured address only.
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
	var err error
	switch os.Args[1] {
	case "dev":
		err = runDev(ctx, os.Args[2:])
	case "worker":
		err = runWorker(ctx, os.Args[2:])
	case "state":
		err = runState(ctx, os.Args[2:])
	case "broker":
		err = runBroker(ctx, os.Args[2:])
	case "gateway":
		err = runGateway(ctx, os.Args[2:])
	case "operator":
		err = runOperator(ctx, os.Args[2:])
	case "bootstrap-secrets":
		err = runBootstrapSecrets(ctx, os.Args[2:])
	case "bench":
		err = runBench(ctx, os.Args[2:])
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
	authSkew := f.Duration("auth-clock-skew", 0, "how far a token's exp and nbf may be off from this clock")
	proto := f.Int("protocol-version", 2, "SocketCluster protocol version: 1 (clients <= 14) or 2")
	path := f.String("path", "/socketcluster/", "WebSocket endpoint path")
	pingInterval := f.Duration("ping-interval", 8*time.Second, "how often to ping each socket")
	pingTimeout := f.Duration("ping-timeout", 0, "close a socket silent for this long (default 20s for protocol 1, 30s for 2)")
	handshakeTimeout := f.Duration("handshake-timeout", 10*time.Second, "close a socket without #handshake after this long")
	allowPublish := f.Bool("allow-client-publish", true, "let clients publish to channels")
	origins := f.String("origins", "*:*", "allowed origins: host:port, host:*, *:port, separated by commas")
	chanLimit := f.Int("socket-channel-limit", 1000, "max channels per socket (-1: unlimited)")
	maxPayload := f.Int("max-payload", 1<<20, "max inbound WebSocket message size in bytes")
	handshakePayload := f.Int("handshake-max-payload", 64<<10, "max inbound message size in bytes before the SocketCluster handshake")
	deflate := f.Bool("per-message-deflate", false, "accept permessage-deflate compression when clients offer it")
	maxPending := f.Int("max-pending-bytes", 8<<20, "outbound bytes queued per socket before it is closed as a slow consumer")
	inboundRate := f.Float("inbound-rate", 0, "inbound messages per second per socket; more wait in TCP buffers (0: no limit)")
	maxInboundRate := f.Float("max-inbound-rate", 0, "close a socket (4429) that sends more messages per second than this, bursts of a second's worth (0: no limit)")
	drainRate := f.Float("drain-rate", 1000, "sockets closed per second when draining (SIGTERM, or a gateway leaving); clients reconnect at once elsewhere (negative: all at once)")
	drainTimeout := f.Duration("drain-timeout", 30*time.Second, "longest a SIGTERM drain takes; sockets still open then are cut")
	tlsCert := f.String("tls-cert", "", "PEM certificate to serve wss:// and https:// (reloaded when the file changes)")
	tlsKey := f.String("tls-key", "", "PEM key of --tls-cert")
	trusted := f.String("trusted-proxies", "", "comma-separated CIDRs or addresses whose X-Forwarded-For names the client (the gateway's)")
	logLevel := f.String("log-level", "info", "debug, info, warn or error")
	return func() (worker.ServiceConfig, error) {
		logger, err := logger(*logLevel)
		if err != nil {
			return worker.ServiceConfig{}, err
		}
		ac := auth.Config{Algorithm: *authAlg, Key: []byte(*authKey), DefaultExpiry: *authExpiry, ClockSkew: *authSkew}
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
		proxies, err := worker.ParsePrefixes(*trusted)
		if err != nil {
			return worker.ServiceConfig{}, fmt.Errorf("--trusted-proxies: %w", err)
		}
		if (*tlsCert == "") != (*tlsKey == "") {
			return worker.ServiceConfig{}, errors.New("--tls-cert and --tls-key go together")
		}
		return worker.ServiceConfig{
			Listen:       *listen,
			TLSCertFile:  *tlsCert,
			TLSKeyFile:   *tlsKey,
			DrainTimeout: *drainTimeout,
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
				HandshakeMaxPayload:   int64(*handshakePayload),
				PerMessageDeflate:     *deflate,
				MaxPendingBytes:       *maxPending,
				InboundRate:           *inboundRate,
				MaxInboundRate:        *maxInboundRate,
				DrainRate:             *drainRate,
				TrustedProxies:        proxies,
				Auth:                  ac,
				Logger:                logger,
			},
		}, nil
	}
}

// clusterFlags registers what every cluster component shares. A
// component of a cluster refuses to start without a cluster token unless
// told --insecure: without one, anything that reaches its gRPC port can
// join, subscribe and receive every message.
func clusterFlags(f *flags) func() (grpcx.Config, error) {
	token := f.String("cluster-token", "", "shared secret every component presents")
	insecure := f.Bool("insecure", false, "run without a cluster token (anything that reaches the gRPC ports can join; trusted networks only)")
	cert := f.String("grpc-tls-cert", "", "PEM certificate for gRPC TLS between components (servers; clients present it for mTLS)")
	key := f.String("grpc-tls-key", "", "PEM key of --grpc-tls-cert")
	ca := f.String("grpc-tls-ca", "", "PEM CA bundle to verify gRPC peers")
	mtls := f.Bool("grpc-tls-require-client-cert", false, "servers refuse clients without a certificate signed by --grpc-tls-ca (mutual TLS)")
	return func() (grpcx.Config, error) {
		if *token == "" && !*insecure {
			return grpcx.Config{}, errors.New("no --cluster-token (SCC_CLUSTER_TOKEN): every component of a cluster must present the same one; " +
				"--insecure runs without, on a trusted network only")
		}
		return grpcx.Config{Token: *token, TLSCertFile: *cert, TLSKeyFile: *key, TLSCAFile: *ca, RequireClientCert: *mtls}, nil
	}
}

// memberFlags registers what the broker and the gateway share as members
// of a cluster (--state, the cluster token and gRPC TLS, --log-level) and
// returns the step that parses args and checks them.
func memberFlags(f *flags) func(args []string) (string, grpcx.Config, *slog.Logger, error) {
	stateAddr := f.String("state", "", "state service address (host:port)")
	grpcCfg := clusterFlags(f)
	level := f.String("log-level", "info", "debug, info, warn or error")
	return func(args []string) (string, grpcx.Config, *slog.Logger, error) {
		log, err := parseLogged(f, args, level)
		if err != nil {
			return "", grpcx.Config{}, nil, err
		}
		if *stateAddr == "" {
			return "", grpcx.Config{}, nil, errors.New("--state is required")
		}
		gc, err := grpcCfg()
		return *stateAddr, gc, log, err
	}
}

// parseLogged parses the flags, then builds the logger --log-level names.
func parseLogged(f *flags, args []string, level *string) (*slog.Logger, error) {
	if err := f.Parse(args); err != nil {
		return nil, err
	}
	return logger(*level)
}

func logger(level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func runWorker(ctx context.Context, args []string) error {
	f := newFlags("scc worker")
	build := workerFlags(f, ":8000")
	grpcCfg := clusterFlags(f)
	stateAddr := f.String("state", "", "state service address (host:port); empty runs alone on an in-process broker")
	id := f.String("id", "", "worker id in the cluster (default: hostname and a random suffix)")
	adv := f.String("advertise", "", "client-facing address the gateway routes to (default: POD_IP with the listen port)")
	if err := f.Parse(args); err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	if *stateAddr == "" {
		return worker.Run(ctx, cfg)
	}
	if *id == "" {
		*id = member.DefaultID("worker")
	}
	if *adv == "" {
		*adv = member.AdvertiseAddr(cfg.Listen)
	}
	gc, err := grpcCfg()
	if err != nil {
		return err
	}
	cluster.Join(&cfg, cluster.Config{ID: *id, StateAddr: *stateAddr, Advertise: *adv, GRPC: gc})
	return worker.Run(ctx, cfg)
}

func runState(ctx context.Context, args []string) error {
	f := newFlags("scc state")
	listen := f.String("listen", ":9000", "gRPC address")
	httpListen := f.String("http-listen", ":9001", "address for /healthz, /readyz and /metrics (empty: off)")
	settle := f.Duration("settle-window", 2*time.Second, "wait this long after start for members before changing the ring")
	lease := f.Duration("lease", 5*time.Second, "drop a member silent this long")
	grpcCfg := clusterFlags(f)
	level := f.String("log-level", "info", "debug, info, warn or error")
	log, err := parseLogged(f, args, level)
	if err != nil {
		return err
	}
	gc, err := grpcCfg()
	if err != nil {
		return err
	}
	return state.Run(ctx, state.ServiceConfig{Listen: *listen, HTTPListen: *httpListen, GRPC: gc,
		State: state.Config{SettleWindow: *settle, Lease: *lease, Logger: log}})
}

func runBroker(ctx context.Context, args []string) error {
	f := newFlags("scc broker")
	listen := f.String("listen", ":9100", "gRPC address")
	httpListen := f.String("http-listen", ":9101", "address for /healthz, /readyz and /metrics (empty: off)")
	parse := memberFlags(f)
	id := f.String("id", "", "broker id in the ring (default: hostname and a random suffix)")
	adv := f.String("advertise", "", "address workers dial (default: POD_IP or loopback with the listen port)")
	drain := f.Duration("drain-timeout", 30*time.Second, "longest a SIGTERM drain may take")
	stateAddr, gc, log, err := parse(args)
	if err != nil {
		return err
	}
	return broker.Run(ctx, broker.ServiceConfig{ID: *id, Listen: *listen, Advertise: *adv, HTTPListen: *httpListen,
		StateAddr: stateAddr, GRPC: gc, DrainTimeout: *drain, Broker: broker.Config{Logger: log}})
}

func runGateway(ctx context.Context, args []string) error {
	f := newFlags("scc gateway")
	listen := f.String("listen", ":8000", "address to serve HTTP and WebSocket on")
	reusePort := f.Bool("reuse-port", false, "share --listen with other gateways on this host (SO_REUSEPORT): the kernel spreads new connections over them")
	httpListen := f.String("http-listen", "", "address for /healthz, /readyz and /metrics; when set, --listen no longer serves /metrics (empty: all on --listen)")
	parse := memberFlags(f)
	id := f.String("id", "", "gateway id in the cluster (default: hostname and a random suffix)")
	adv := f.String("advertise", "", "address reported to state (default: POD_IP with the listen port)")
	path := f.String("path", "/socketcluster/", "SocketCluster WebSocket path routed to workers")
	tlsCert := f.String("tls-cert", "", "PEM certificate to serve https:// and wss:// (reloaded when the file changes)")
	tlsKey := f.String("tls-key", "", "PEM key of --tls-cert")
	perIP := f.Int("max-conns-per-ip", 0, "open WebSocket connections and in-flight requests per client address (0: no limit; 429 beyond)")
	upRate := f.Float("upgrade-rate", 0, "WebSocket upgrades per second over the gateway (0: no limit; 503 beyond)")
	upBurst := f.Int("upgrade-burst", 0, "upgrades allowed at once above --upgrade-rate (default: one second's worth)")
	maxHeader := f.Int("max-header-bytes", 16<<10, "request header size limit (431 beyond)")
	headerTimeout := f.Duration("read-header-timeout", 10*time.Second, "close a connection whose request header has not arrived in this long")
	idle := f.Duration("idle-timeout", 60*time.Second, "close a keep-alive connection idle this long")
	dial := f.Duration("dial-timeout", 5*time.Second, "bound on connecting to a worker and its answer to an upgrade")
	noWorker := f.Duration("no-worker-wait", 2*time.Second, "how long a request waits for a routable worker when there is none, before 503 (negative: at once)")
	tunnels := f.Bool("tunnels", true, "carry plain clients' connections to each worker on a few shared tunnel sessions (false: a socket per client)")
	drainDelay := f.Duration("drain-delay", 2*time.Second, "on SIGTERM, keep serving this long while reporting unready (load balancers take the gateway out), then drain")
	drainTimeout := f.Duration("drain-timeout", 30*time.Second, "longest a drain takes; the clients still connected then are told to come back at once (4000) and cut a second later at most")
	stateAddr, gc, log, err := parse(args)
	if err != nil {
		return err
	}
	return gateway.Run(ctx, gateway.Config{Listen: *listen, ReusePort: *reusePort, HTTPListen: *httpListen, StateAddr: stateAddr, ID: *id, Advertise: *adv, Path: *path,
		GRPC: gc, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, MaxConnsPerIP: *perIP, UpgradeRate: *upRate,
		UpgradeBurst: *upBurst, MaxHeaderBytes: *maxHeader, ReadHeaderTimeout: *headerTimeout, IdleTimeout: *idle,
		DialTimeout: *dial, NoWorkerWait: *noWorker, DisableTunnels: !*tunnels, DrainDelay: *drainDelay, DrainTimeout: *drainTimeout, Logger: log})
}

func runOperator(ctx context.Context, args []string) error {
	f := newFlags("scc operator")
	metrics := f.String("metrics-listen", ":8080", "address of /metrics (0: none)")
	health := f.String("health-listen", ":8081", "address of /healthz and /readyz")
	elect := f.Bool("leader-elect", false, "elect one active operator among replicas (a Lease in the namespace)")
	namespace := f.String("namespace", "", "watch only this namespace (default: all)")
	resync := f.Duration("resync", 10*time.Second, "how often each SocketCluster's status is refreshed (ring, connections)")
	level := f.String("log-level", "info", "debug, info, warn or error")
	log, err := parseLogged(f, args, level)
	if err != nil {
		return err
	}
	return operator.Run(ctx, operator.Options{MetricsAddr: *metrics, HealthAddr: *health, LeaderElect: *elect,
		Namespace: *namespace, Resync: *resync, Logger: log})
}

func runBootstrapSecrets(ctx context.Context, args []string) error {
	f := newFlags("scc bootstrap-secrets")
	name := f.String("secret", "scc-secrets", "the Secret to create when absent")
	keys := f.String("keys", "auth-key,cluster-token", "its keys, each given 32 random bytes (hex)")
	if err := f.Parse(args); err != nil {
		return err
	}
	c, ns, err := kube.InCluster()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var created bool
	for { // the API may not answer yet (a fresh node): a minute of tries
		if created, err = c.EnsureSecret(ctx, ns, *name, strings.Split(*keys, ",")); err == nil || ctx.Err() != nil {
			break
		}
		var se *kube.StatusError
		if errors.As(err, &se) && se.Code < 500 {
			return err // refused: more tries will not help
		}
		fmt.Fprintln(os.Stderr, "scc bootstrap-secrets: retrying:", err)
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		return err
	}
	if created {
		fmt.Printf("created secret %s/%s (%s)\n", ns, *name, *keys)
	} else {
		fmt.Printf("secret %s/%s exists: left as it is\n", ns, *name)
	}
	return nil
}

func runDev(ctx context.Context, args []string) error {
	f := newFlags("scc dev")
	build := workerFlags(f, ":8000")
	standalone := f.Bool("standalone", false, "run the worker on an in-process broker instead of state + broker over gRPC")
	if err := f.Parse(args); err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	return dev.Run(ctx, dev.Config{Worker: cfg, Standalone: *standalone})
}

func parsePIDs(list string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
	}
	return out, nil
}

func runBench(ctx context.Context, args []string) error {
	f := newFlags("scc bench")
	url := f.String("url", "ws://127.0.0.1:8000/socketcluster/", "endpoint to load")
	target := f.String("target", "sc", "protocol: sc (any SocketCluster server) or centrifugo")
	more := f.String("more-urls", "", "comma-separated further endpoints; connections spread over all (the cluster scenario)")
	proto := f.Int("protocol-version", 2, "1 or 2")
	scenarios := f.String("scenario", "fanout", "comma-separated: "+strings.Join(bench.Scenarios, ", ")+", or all")
	duration := f.Duration("duration", 5*time.Second, "measured time per scenario")
	warmup := f.Duration("warmup", time.Second, "time before measuring")
	conns := f.Int("connections", 0, "subscribers or connections (0: the scenario's default)")
	inFlight := f.Int("in-flight", 0, "publishes awaiting ack per publisher (0: the scenario's default)")
	rate := f.Int("rate", 0, "publishes per second for fanout-rate (0: 40)")
	payload := f.Int("payload", 64, "payload bytes")
	compress := f.Bool("compress", false, "offer permessage-deflate (the server compresses when it accepts)")
	batch := f.Bool("batch", false, "send frames queued together as one JSON array per message (official clients send one frame per message)")
	pids := f.String("server-pid", "", "server processes to read CPU and memory of (/proc), comma-separated")
	proxyPids := f.String("proxy-pid", "", "processes of a proxy in front of the server (also counted as server), whose CPU is reported on its own, comma-separated")
	jsonOut := f.String("json", "", "also write the results as JSON to this file")
	if err := f.Parse(args); err != nil {
		return err
	}
	pidList, err := parsePIDs(*pids)
	if err != nil {
		return fmt.Errorf("--server-pid: %w", err)
	}
	proxyList, err := parsePIDs(*proxyPids)
	if err != nil {
		return fmt.Errorf("--proxy-pid: %w", err)
	}
	pidList = append(pidList, proxyList...)
	list := strings.Split(*scenarios, ",")
	if *scenarios == "all" {
		list = bench.Scenarios
	}
	var results []*bench.Result
	for i, sc := range list {
		if i > 0 {
			// Each scenario starts from a clean tool: the garbage of the
			// previous one (2,000 closed clients, say) would otherwise be
			// collected on this one's time. The server gets a moment to
			// finish closing those connections.
			runtime.GC()
			debug.FreeOSMemory()
			time.Sleep(500 * time.Millisecond)
		}
		var urls []string
		if *more != "" {
			urls = strings.Split(*more, ",")
		}
		res, err := bench.Run(ctx, bench.Config{URL: *url, URLs: urls, Target: *target, ProtocolVersion: *proto, Scenario: strings.TrimSpace(sc),
			Duration: *duration, Warmup: *warmup, Connections: *conns, InFlight: *inFlight, Rate: *rate,
			PayloadSize: *payload, ServerPIDs: pidList, ProxyPIDs: proxyList, Compress: *compress, Batch: *batch})
		if err != nil {
			return err
		}
		results = append(results, res)
	}
	bench.WriteTable(os.Stdout, results)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		return os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}
