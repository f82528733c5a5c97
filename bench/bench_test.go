package bench

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/services/worker"
)

func server(t *testing.T, setup func(*worker.Server)) string {
	t.Helper()
	srv, err := worker.NewServer(worker.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { srv.Close(); hs.Close() })
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"
}

func quick(url, scenario string, conns int) Config {
	return Config{URL: url, Scenario: scenario, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Connections: conns, ServerPID: os.Getpid()}
}

func TestFanoutCountsWhatArrives(t *testing.T) {
	url := server(t, nil)
	res, err := Run(t.Context(), quick(url, "fanout", 20))
	if err != nil {
		t.Fatal(err)
	}
	if res.Published == 0 || res.Delivered == 0 {
		t.Fatalf("nothing measured: %+v", res)
	}
	// Each publish reaches at most the 20 subscribers; deliveries of
	// publishes from before the window may land inside it, hence the slack.
	if res.Delivered > (res.Published+20*20)*20 {
		t.Fatalf("reported %d deliveries for %d publishes to 20 subscribers", res.Delivered, res.Published)
	}
	// The "server" is this process (ServerPID), which ran the load too:
	// it cannot have used no CPU.
	if res.LatencyP50Ms <= 0 || res.LatencyP99Ms < res.LatencyP50Ms || res.ServerCPUSeconds <= 0 {
		t.Fatalf("latency or CPU missing: %+v", res)
	}
}

func TestNoDeliveryNotSeen(t *testing.T) {
	// The server drops every delivery: the tool must report none.
	url := server(t, func(s *worker.Server) {
		s.UseOutbound(func(*worker.Action) error { return worker.ErrSilentBlock })
	})
	res, err := Run(t.Context(), quick(url, "fanout", 5))
	if err != nil {
		t.Fatal(err)
	}
	if res.Published == 0 || res.Delivered != 0 {
		t.Fatalf("published %d, reported %d deliveries that never arrived", res.Published, res.Delivered)
	}
	// A server that mangles payloads: counted as unexpected, not delivered.
	url = server(t, func(s *worker.Server) {
		s.UseOutbound(func(a *worker.Action) error { a.Data = json.RawMessage(`"mangled"`); return nil })
	})
	res, err = Run(t.Context(), quick(url, "fanout", 5))
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 0 || res.UnexpectedPayload == 0 {
		t.Fatalf("mangled payloads: delivered %d, unexpected %d", res.Delivered, res.UnexpectedPayload)
	}
}

func TestOtherScenarios(t *testing.T) {
	url := server(t, nil)
	for _, c := range []Config{quick(url, "fanout-rate", 10), quick(url, "channels", 20), quick(url, "churn", 0),
		quick(url, "hot", 0), quick(url, "idle", 50), quick(url, "storm", 50)} {
		c.Rate, c.InFlight = 200, 0
		res, err := Run(t.Context(), c)
		if err != nil {
			t.Fatalf("%s: %v", c.Scenario, err)
		}
		ok := map[string]bool{
			"fanout-rate": res.Delivered > 0 && res.LatencyP99Ms > 0,
			"channels":    res.Delivered > 0,
			"churn":       res.Operations > 0,
			"hot":         res.Published > 0 && res.Delivered > 0,
			"idle":        res.Connections == 50 && res.Disconnects == 0,
			"storm":       res.OperationsPerSec > 0,
		}[c.Scenario]
		if !ok || res.Errors > 0 {
			t.Errorf("%s: %+v", c.Scenario, res)
		}
	}
	var b strings.Builder
	WriteTable(&b, []*Result{{Scenario: "x"}})
	if !strings.Contains(b.String(), "delivered/s") {
		t.Fatal("table header")
	}
	if _, err := Run(t.Context(), Config{URL: url, Scenario: "nope"}); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

func TestSpreadOverServers(t *testing.T) {
	// Two servers on one in-process broker: subscribers on both, the
	// publisher on the first; every subscriber still receives.
	lb := worker.NewLocalBroker()
	mk := func() string {
		srv, err := worker.NewServer(worker.Config{Broker: lb.Attach, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		t.Cleanup(func() { srv.Close(); hs.Close() })
		return "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"
	}
	a, b := mk(), mk()
	c := quick(a, "fanout", 10)
	c.URLs = []string{b}
	res, err := Run(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered == 0 || res.Errors > 0 {
		t.Fatalf("%+v", res)
	}
}

func TestChannelsPublishToOwnChannel(t *testing.T) {
	// Every connection of the channels scenario publishes to the channel it
	// subscribed to: the server refuses any other publish.
	url := server(t, func(s *worker.Server) {
		s.UseInbound(func(a *worker.Action) error {
			if a.Type == worker.ActionPublishIn && !a.Socket.IsSubscribed(a.Channel) {
				return errors.New("publish to a channel this socket is not subscribed to")
			}
			return nil
		})
	})
	res, err := Run(t.Context(), quick(url, "channels", 40))
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered == 0 || res.Errors > 0 {
		t.Fatalf("delivered %d, errors %d", res.Delivered, res.Errors)
	}
}

func TestPublishTime(t *testing.T) {
	r := &runner{cfg: Config{PayloadSize: 64}}
	now := time.Now()
	if ns, ok := publishTime(r.payload(now)); !ok || ns != now.UnixNano() {
		t.Fatalf("publishTime(payload) = %d %v, want %d", ns, ok, now.UnixNano())
	}
	for _, bad := range []string{``, `"scc"`, `"scc.xx"`, `"sccZZ.x"`, `"abc123.x"`, `123`, `"scc123456789012345678.x"`} {
		if _, ok := publishTime([]byte(bad)); ok {
			t.Errorf("publishTime(%s) accepted", bad)
		}
	}
}
