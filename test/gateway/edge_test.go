package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/pkg/member"
	"github.com/scc-k8s/scc/proto/sccv1"
	gateway "github.com/scc-k8s/scc/services/ingress-gw"
	"github.com/scc-k8s/scc/services/worker"
)

// stillServing checks that a fresh client gets through the gateway and
// receives a publish.
func stillServing(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: url, NoReconnect: true})
	if err != nil {
		t.Fatalf("a fresh client cannot connect: %v", err)
	}
	defer c.Close()
	got := make(chan json.RawMessage, 1)
	if err := c.Subscribe(ctx, "alive", func(_ string, d json.RawMessage) { got <- d }); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "alive", "yes"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("no delivery through the gateway")
	}
}

// metric reads one sample of the gateway's /metrics; the test fails if it
// is not there (read as 0, "the connections are gone" would pass on a
// misnamed series).
func metric(t *testing.T, g *clustertest.Gateway, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("the gateway's /metrics has no %s", series)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// rawExchange writes req on a fresh connection and returns the status
// line the gateway answers with ("" when it closes without one) and how
// long that took.
func rawExchange(t *testing.T, addr string, write func(net.Conn)) (string, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go write(conn)
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), time.Since(start)
}

func TestBadInputAtTheGateway(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 2})
	g := c.AddGateway(gateway.Config{MaxHeaderBytes: 4 << 10, ReadHeaderTimeout: 500 * time.Millisecond,
		MaxConnsPerIP: 8})
	c.WaitRoutable(2)
	addr := g.Addr().String()

	t.Run("garbage instead of HTTP", func(t *testing.T) {
		before := metric(t, g, "scc_gateway_conns_without_request_total")
		line, _ := rawExchange(t, addr, func(c net.Conn) { _, _ = c.Write([]byte("\x16\x03\x01\x02\x00garbage\r\n\r\n")) })
		if !strings.HasPrefix(line, "HTTP/1.1 400") {
			t.Errorf("answer %q, want 400", line)
		}
		waitMetric(t, g, "scc_gateway_conns_without_request_total", before+1)
		stillServing(t, g.URL)
	})
	t.Run("oversized headers", func(t *testing.T) {
		line, _ := rawExchange(t, addr, func(c net.Conn) {
			_, _ = c.Write([]byte("GET /socketcluster/ HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n"))
		})
		if !strings.HasPrefix(line, "HTTP/1.1 431") {
			t.Errorf("answer %q, want 431", line)
		}
		stillServing(t, g.URL)
	})
	t.Run("slowloris", func(t *testing.T) {
		before := metric(t, g, "scc_gateway_conns_without_request_total")
		line, took := rawExchange(t, addr, func(c net.Conn) {
			_, _ = c.Write([]byte("GET /socketcluster/ HTTP/1.1\r\nHost: x\r\n"))
			for i := 0; i < 100; i++ {
				time.Sleep(100 * time.Millisecond)
				if _, err := c.Write([]byte("X-Slow: " + strconv.Itoa(i) + "\r\n")); err != nil {
					return
				}
			}
		})
		// net/http closes a header that has not arrived in time without
		// an answer.
		if line != "" || took > 3*time.Second {
			t.Errorf("slow header: answer %q after %v, want the connection closed at the 500 ms header timeout", line, took)
		}
		waitMetric(t, g, "scc_gateway_conns_without_request_total", before+1)
		stillServing(t, g.URL)
	})
	t.Run("upgrade to an unknown path", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/elsewhere/", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("upgrade to /elsewhere/: %v %v, want 404", err, resp)
		}
		if v := metric(t, g, `scc_gateway_refused_total{reason="path"}`); v < 1 {
			t.Errorf("refused path metric %v", v)
		}
		stillServing(t, g.URL)
	})
	t.Run("connections past the per-IP limit", func(t *testing.T) {
		// The earlier subtests' clients have closed; their slots free
		// once the gateway sees their tunnels end.
		waitFor(t, "earlier tunnels closed", func() bool { return metric(t, g, "scc_gateway_connections") == 0 })
		var held []*websocket.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; i < 8; i++ {
			conn, _, err := websocket.DefaultDialer.Dial(g.URL, nil)
			if err != nil {
				t.Fatalf("connection %d under the limit: %v", i+1, err)
			}
			held = append(held, conn)
		}
		_, resp, err := websocket.DefaultDialer.Dial(g.URL, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("the 9th connection: %v %v, want 429", err, resp)
		}
		if v := metric(t, g, `scc_gateway_refused_total{reason="per_ip"}`); v < 1 {
			t.Errorf("refused per_ip metric %v", v)
		}
		held[0].Close()
		held = held[1:]
		waitFor(t, "a freed slot", func() bool {
			c, _, err := websocket.DefaultDialer.Dial(g.URL, nil)
			if err == nil {
				held = append(held, c)
			}
			return err == nil
		})
	})
	waitFor(t, "the held tunnels closed", func() bool { return metric(t, g, "scc_gateway_connections") == 0 })
	stillServing(t, g.URL)
}

func TestUpgradeRateLimit(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1})
	g := c.AddGateway(gateway.Config{UpgradeRate: 2, UpgradeBurst: 5})
	c.WaitRoutable(1)
	ok, refused := 0, 0
	for i := 0; i < 10; i++ {
		conn, resp, err := websocket.DefaultDialer.Dial(g.URL, nil)
		switch {
		case err == nil:
			ok++
			defer conn.Close()
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
			refused++
		default:
			t.Fatalf("upgrade %d: %v", i, err)
		}
	}
	if ok < 5 || ok > 6 || refused != 10-ok {
		t.Fatalf("10 upgrades at once with a burst of 5: %d through, %d refused", ok, refused)
	}
	if v := metric(t, g, `scc_gateway_refused_total{reason="upgrade_rate"}`); v != float64(refused) {
		t.Errorf("refused upgrade_rate metric %v, want %d", v, refused)
	}
	time.Sleep(600 * time.Millisecond) // a token back
	stillServing(t, g.URL)
}

// TestForwardedHeaders: plain HTTP goes to a worker with the client's
// address and scheme; a client's own forwarding headers are replaced.
func TestForwardedHeaders(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 0})
	// A custom worker serving HTTP: any member the view lists as a worker.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"xff": r.Header.Get("X-Forwarded-For"),
			"proto": r.Header.Get("X-Forwarded-Proto"), "host": r.Host, "path": r.URL.Path})
	}))
	defer echo.Close()
	m, err := member.Start(member.Config{StateAddr: c.StateAddr, GRPC: c.GRPC, Logger: c.Log,
		Member: &sccv1.Member{Id: "http-worker", Role: sccv1.Role_ROLE_WORKER, Address: echo.Listener.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g := c.AddGateway(gateway.Config{})
	c.WaitRoutable(1)
	req, _ := http.NewRequest("GET", "http://"+g.Addr().String()+"/api/hello", nil)
	req.Host = "app.example"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"xff": "127.0.0.1", "proto": "http", "host": "app.example", "path": "/api/hello"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: worker saw %q, want %q", k, got[k], v)
		}
	}
}

// TestClientAddressThroughGateway: a worker that trusts the gateway sees
// the client's address, never one the client forged.
func TestClientAddressThroughGateway(t *testing.T) {
	seen := make(chan string, 1)
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1,
		Worker: worker.Config{TrustedProxies: mustPrefixes(t, "127.0.0.1")},
		Setup: func(s *worker.Server) {
			s.OnConnect(func(sock *worker.Socket) { seen <- sock.RemoteAddr() })
		}})
	g := c.AddGateway(gateway.Config{})
	c.WaitRoutable(1)
	h := http.Header{"X-Forwarded-For": {"6.6.6.6"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{URL: g.URL, Header: h, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if a := <-seen; a != "127.0.0.1" {
		t.Fatalf("worker saw the client at %q, want 127.0.0.1 (the forged header must not pass)", a)
	}
}

// TestGatewayDrain: a gateway being stopped gets its clients closed by the
// workers with 4000 (they reconnect at once, here through the other
// gateway); the other gateway's clients stay connected.
func TestGatewayDrain(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 2, Worker: worker.Config{DrainRate: 100}})
	g1 := c.AddGateway(gateway.Config{DrainTimeout: 5 * time.Second})
	g2 := c.AddGateway(gateway.Config{})
	c.WaitRoutable(2)
	var closed1, closed2, back1 atomic.Int32
	var codesMu sync.Mutex
	var codes []int
	mk := func(urls []string, closed, back *atomic.Int32) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// A refused reconnect (the draining gateway answers 503) moves on
		// to the next URL, as a Service would send it to another gateway.
		cl := client.New(client.Options{URLs: urls, ReconnectDelay: 50 * time.Millisecond})
		connects := 0
		cl.OnConnect(func(client.Status) {
			connects++
			if connects > 1 && back != nil {
				back.Add(1)
			}
		})
		cl.OnDisconnect(func(ce *client.CloseError) {
			closed.Add(1)
			codesMu.Lock()
			codes = append(codes, ce.Code)
			codesMu.Unlock()
		})
		if err := cl.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
	}
	for i := 0; i < 20; i++ {
		mk([]string{g1.URL, g2.URL}, &closed1, &back1)
		mk([]string{g2.URL}, &closed2, nil)
	}
	start := time.Now()
	g1.Shutdown()
	t.Logf("gateway drained in %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, "gateway 1's clients back through gateway 2", func() bool { return back1.Load() == 20 })
	t.Logf("20 clients of the drained gateway back after %v", time.Since(start).Round(time.Millisecond))
	if n := closed2.Load(); n != 0 {
		t.Errorf("%d clients of the other gateway were disconnected", n)
	}
	codesMu.Lock()
	defer codesMu.Unlock()
	for _, code := range codes {
		if code != 4000 {
			t.Errorf("a drained client got close code %d, want 4000 (reconnect at once)", code)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitMetric(t *testing.T, g *clustertest.Gateway, series string, atLeast float64) {
	t.Helper()
	waitFor(t, series, func() bool { return metric(t, g, series) >= atLeast })
}

func mustPrefixes(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	p, err := worker.ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
