package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/pkg/grpcx"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// TestKilledWorkersClientsComeBackAtOnce: a worker process is SIGKILLed
// while messages stream to its clients through the gateway; each client
// gets close code 4000 from the gateway (on which SocketCluster clients
// reconnect at once; a connection that just ends sends the official
// client into a 10-20 s backoff) and is back on the other worker. Over
// every way the gateway carries a client: tunnel sessions or a socket per
// client, plain or TLS.
func TestKilledWorkersClientsComeBackAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the cluster as processes")
	}
	for _, tc := range carriers {
		t.Run(tc.name, func(t *testing.T) { killedWorkerClientsBack(t, tc.tunnels, tc.secure) })
	}
}

// carriers are the ways the gateway carries a client to its worker: on
// tunnel sessions or a socket of its own, plain or TLS (decrypted by Go,
// its bytes then moved by goroutines).
var carriers = []struct {
	name            string
	tunnels, secure bool
}{{"tunnels", true, false}, {"tunnels-tls", true, true}, {"socket-per-client", false, false}, {"socket-per-client-tls", false, true}}

// serveTLS gives cfg a fresh certificate and returns a dialer that trusts
// it.
func serveTLS(t *testing.T, cfg *gateway.Config) *websocket.Dialer {
	t.Helper()
	files := testutil.NewTLSFiles(t)
	cfg.TLSCertFile, cfg.TLSKeyFile = files.CertFile, files.KeyFile
	return &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: files.Pool}}
}

func killedWorkerClientsBack(t *testing.T, tunnels, secure bool) {
	bin := testutil.SccBinary(t)
	const token = "killed-worker-token"
	env := []string{"SCC_CLUSTER_TOKEN=" + token, "SCC_LOG_LEVEL=warn"}
	state := fmt.Sprint("127.0.0.1:", testutil.FreePort(t))
	testutil.StartProc(t, bin, "state", env, "state", "--listen", state, "--http-listen", "", "--settle-window", "0")
	testutil.StartProc(t, bin, "broker", env, "broker", "--listen", fmt.Sprint("127.0.0.1:", testutil.FreePort(t)),
		"--http-listen", "", "--state", state)
	worker := func(name string) (*testutil.Proc, string) {
		addr := fmt.Sprint("127.0.0.1:", testutil.FreePort(t))
		p := testutil.StartProc(t, bin, name, env, "worker", "--listen", addr, "--state", state, "--auth-key", "k")
		testutil.WaitHTTP(t, "http://"+addr+"/readyz")
		return p, addr
	}
	doomed, doomedAddr := worker("worker-1")

	admin := fmt.Sprint("127.0.0.1:", testutil.FreePort(t)) // plain HTTP, TLS or not
	cfg := gateway.Config{Listen: "127.0.0.1:0", HTTPListen: admin, StateAddr: state, GRPC: grpcx.Config{Token: token}, DisableTunnels: !tunnels}
	var dialer *websocket.Dialer
	scheme := "ws"
	if secure {
		dialer, scheme = serveTLS(t, &cfg), "wss"
	}
	g, err := gateway.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Shutdown)
	url := scheme + "://" + g.Addr().String() + "/socketcluster/"
	testutil.WaitHTTP(t, "http://"+doomedAddr+"/readyz")

	// 50 subscribers, all on worker-1 (the only one), with a reconnect
	// delay long enough that a client closed any other way would not be
	// back in time.
	const n = 50
	var (
		mu     sync.Mutex
		codes  = map[int]int{}
		closed atomic.Int64
	)
	clients := make([]*client.Client, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range clients {
		c, err := client.Dial(ctx, client.Options{URL: url, Dialer: dialer, ReconnectDelay: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c.OnDisconnect(func(ce *client.CloseError) {
			mu.Lock()
			codes[ce.Code]++
			mu.Unlock()
			closed.Add(1)
		})
		if err := c.Subscribe(ctx, "news", func(string, json.RawMessage) {}); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
		defer c.Close()
	}
	_, otherAddr := worker("worker-2")

	// A stream of messages to them, so that the kill comes while frames
	// are on their way; the publisher is on the worker that stays.
	pub, err := client.Dial(ctx, client.Options{URL: "ws://" + otherAddr + "/socketcluster/", NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	pubs.Add(1)
	go func() {
		defer pubs.Done()
		const payload = "a message of some length, to have frames on the way at the kill"
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			_ = pub.PublishNoAck("news", payload)
		}
	}()
	time.Sleep(300 * time.Millisecond)

	killed := time.Now()
	_ = doomed.Cmd.Process.Kill()
	<-doomed.Done
	for deadline := time.Now().Add(10 * time.Second); closed.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			mu.Lock()
			seen := fmt.Sprint(codes)
			mu.Unlock()
			t.Fatalf("%d of %d clients of the killed worker closed in 10 s (codes %v)", closed.Load(), n, seen)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		for _, c := range clients {
			if c.Status().ID == "" || c.Reconnects.Load() == 0 {
				return false
			}
		}
		return true
	}, "every client back on the other worker")
	back := time.Since(killed)
	close(stop)
	pubs.Wait()
	mu.Lock()
	defer mu.Unlock()
	if codes[4000] != n {
		t.Fatalf("close codes %v: want 4000 for all %d", codes, n)
	}
	const told = "scc_gateway_worker_gone_closes_total"
	if v := testutil.MustScrape(t, "http://"+admin+"/metrics", told)[told]; v != n {
		t.Errorf("%s %v, want %d", told, v, n)
	}
	t.Logf("%d clients of a killed worker: codes %v, all back within %v", n, codes, back.Round(time.Millisecond))
}
