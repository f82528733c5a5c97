// Package interop drives the worker (directly, and through the gateway, over
// ws:// and wss://) with the official SocketCluster
// JavaScript clients (socketcluster-client 19.x against protocol 2, 14.x
// against protocol 1) and the demo page with headless Chromium. The npm
// packages come from this folder's package-lock.json (npm ci, done by
// scripts/test.sh); Chromium is Debian's.
package interop

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/dev"
	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/codec"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/worker"
)

// setupApp registers what the JavaScript tests call.
func setupApp(srv *worker.Server) {
	srv.HandleProcedure("echo", func(r *worker.Request) (any, error) { return r.Data, nil })
	srv.HandleProcedure("fail", func(r *worker.Request) (any, error) {
		return nil, codec.NewError("BoomError", "boom", codec.Member{Key: "extra", Value: 1})
	})
	srv.HandleProcedure("login", func(r *worker.Request) (any, error) {
		var in struct {
			Username string `json:"username"`
		}
		_ = json.Unmarshal(r.Data, &in)
		return "ok", r.Socket.SetAuthToken(map[string]any{"username": in.Username})
	})
	srv.HandleProcedure("whoami", func(r *worker.Request) (any, error) {
		if tok := r.Socket.AuthToken(); tok != nil {
			return tok["username"], nil
		}
		return nil, nil
	})
	srv.HandleProcedure("sign", func(r *worker.Request) (any, error) {
		var claims map[string]any
		if err := json.Unmarshal(r.Data, &claims); err != nil {
			return nil, err
		}
		tok, _, err := srv.Auth().Sign(claims, time.Now())
		return tok, err
	})
	srv.HandleProcedure("kickMe", func(r *worker.Request) (any, error) {
		ch, _ := codec.String(codec.Get(r.Data, "channel"))
		r.Socket.KickOut(ch, "bye")
		return nil, nil
	})
	srv.HandleReceiver("note", func(s *worker.Socket, data json.RawMessage) { _ = s.Transmit("noteAck", data) })
	srv.HandleReceiver("dropMe", func(s *worker.Socket, data json.RawMessage) {
		code, _ := codec.Int(data)
		s.Disconnect(int(code), "asked to")
	})
	srv.HandleReceiver("askMe", func(s *worker.Socket, data json.RawMessage) {
		go func() {
			res, err := s.Invoke(context.Background(), "ask", data)
			if err != nil {
				_ = s.Transmit("askResult", map[string]string{"error": err.Error()})
				return
			}
			_ = s.Transmit("askResult", map[string]json.RawMessage{"answer": res})
		}()
	})
}

// deployment is how the clients reach the worker.
type deployment struct {
	name    string
	gateway bool // through scc dev's gateway; otherwise the worker itself
	tls     bool // wss:// and https://, with a certificate from a test CA
}

var (
	direct      = deployment{name: "worker"}
	viaGateway  = deployment{name: "gateway", gateway: true}
	gatewayTLS  = deployment{name: "gateway wss", gateway: true, tls: true}
	directTLS   = deployment{name: "worker wss", tls: true}
	deployments = []deployment{direct, viaGateway, gatewayTLS, directTLS}
)

// serve runs the service on 127.0.0.1:0 as d says and returns its port and
// what node needs to reach it (SCC_PORT, SCC_SECURE and, for TLS, the
// test CA in NODE_EXTRA_CA_CERTS).
func serve(t *testing.T, cfg worker.ServiceConfig, d deployment) (int, []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	cfg.Setup = setupApp
	cfg.DrainTimeout = time.Second
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	port := ln.Addr().(*net.TCPAddr).Port
	env := []string{"SCC_PORT=" + strconv.Itoa(port)}
	hc, scheme := http.DefaultClient, "http"
	var gw gateway.Config
	if d.tls {
		files := testutil.NewTLSFiles(t)
		if d.gateway {
			gw.TLSCertFile, gw.TLSKeyFile = files.CertFile, files.KeyFile
		} else {
			cfg.TLSCertFile, cfg.TLSKeyFile = files.CertFile, files.KeyFile
		}
		env = append(env, "SCC_SECURE=1", "NODE_EXTRA_CA_CERTS="+files.CAFile)
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: files.Pool}}}
		scheme = "https"
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		if d.gateway {
			done <- dev.Run(ctx, dev.Config{Worker: cfg, Gateway: gw})
		} else {
			done <- worker.Run(ctx, cfg)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for { // ready: a gateway has a worker to route to
		resp, err := hc.Get(scheme + "://127.0.0.1:" + strconv.Itoa(port) + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return port, env
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func needNodeModules(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is required: install Node.js (the README lists what the tests need)")
	}
	if _, err := os.Stat("node_modules/socketcluster-client"); err != nil {
		t.Fatal("test/interop/node_modules is missing: run scripts/test.sh (it runs npm ci here)")
	}
}

// runNode runs one node:test file with env and reports its output.
func runNode(t *testing.T, file string, env []string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-reporter=spec", "--test-concurrency=1", file)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	testutil.DieWithTest(cmd)
	err := cmd.Run()
	if testing.Verbose() || err != nil {
		t.Logf("node --test %s:\n%s", file, out.String())
	}
	if err != nil {
		t.Fatalf("%s failed: %v", file, err)
	}
}

// The official clients pass the same suite against the worker itself and
// through the gateway, over ws:// and wss://.
func TestSocketClusterClient19(t *testing.T) {
	needNodeModules(t)
	for _, d := range deployments {
		t.Run(d.name, func(t *testing.T) {
			_, env := serve(t, worker.ServiceConfig{Server: worker.Config{
				ProtocolVersion: 2, PingInterval: 200 * time.Millisecond, PingTimeout: time.Second, AckTimeout: 2 * time.Second,
			}}, d)
			runNode(t, "client19.test.mjs", env, 3*time.Minute)
		})
	}
}

func TestSocketClusterClient14(t *testing.T) {
	needNodeModules(t)
	for _, d := range deployments {
		t.Run(d.name, func(t *testing.T) {
			_, env := serve(t, worker.ServiceConfig{Server: worker.Config{
				ProtocolVersion: 1, PingInterval: 200 * time.Millisecond, PingTimeout: time.Second, AckTimeout: 2 * time.Second,
			}}, d)
			runNode(t, "client14.test.cjs", env, 3*time.Minute)
		})
	}
}

// The demo page in Chromium, through `scc dev` (its gateway, then the
// worker).
func TestDemoPageInChromium(t *testing.T) {
	needNodeModules(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is required (Debian package chromium; scripts/test.sh installs it)")
	}
	_, env := serve(t, worker.ServiceConfig{}, viaGateway)
	abs, _ := filepath.Abs("demo.test.mjs")
	runNode(t, abs, append(env, "CHROMIUM="+chromium, "SCC_SCREENSHOT="+os.Getenv("SCC_SCREENSHOT")), 2*time.Minute)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup() // the scc binary the process tests built
	os.Exit(code)
}
