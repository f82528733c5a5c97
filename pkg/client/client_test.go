package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/services/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cfg worker.Config, setup func(*worker.Server)) (*worker.Server, string) {
	t.Helper()
	cfg.Auth.Key = []byte("k")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := worker.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { srv.Close(); hs.Close() })
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http") + srv.Config().Path
}

func TestClientRoundTrip(t *testing.T) {
	for _, v := range []int{1, 2} {
		srv, url := start(t, worker.Config{ProtocolVersion: v, PingInterval: 50 * time.Millisecond, PingTimeout: 200 * time.Millisecond}, func(s *worker.Server) {
			s.HandleProcedure("login", func(r *worker.Request) (any, error) {
				return "ok", r.Socket.SetAuthToken(map[string]any{"user": "dana"})
			})
			s.HandleProcedure("who", func(r *worker.Request) (any, error) { return r.Socket.AuthToken()["user"], nil })
		})
		ctx := t.Context()
		c, err := client.Dial(ctx, client.Options{URL: url, ProtocolVersion: v})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 10)
		if err := c.Subscribe(ctx, "ch", func(_ string, d json.RawMessage) { got <- string(d) }); err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(ctx, "ch", map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		if g := <-got; g != `{"n":1}` {
			t.Fatalf("got %s", g)
		}
		if _, err := c.Invoke(ctx, "login", nil); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, time.Second, func() bool { return c.AuthToken() != "" }, "token set")
		if r, err := c.Invoke(ctx, "who", nil); err != nil || string(r) != `"dana"` {
			t.Fatalf("who: %s %v", r, err)
		}
		// Longer than the ping timeout: the client answers pings.
		time.Sleep(400 * time.Millisecond)
		if _, err := c.Invoke(ctx, "who", nil); err != nil {
			t.Fatal(err)
		}
		if c.Reconnects.Load() != 0 {
			t.Fatalf("reconnected %d times", c.Reconnects.Load())
		}
		c.Close()
		_ = srv
	}
}

func TestClientReconnectResubscribes(t *testing.T) {
	var mu sync.Mutex
	var sockets []*worker.Socket
	srv, url := start(t, worker.Config{}, func(s *worker.Server) {
		s.OnConnect(func(sock *worker.Socket) { mu.Lock(); sockets = append(sockets, sock); mu.Unlock() })
		s.HandleProcedure("who", func(r *worker.Request) (any, error) {
			if tok := r.Socket.AuthToken(); tok != nil {
				return tok["user"], nil
			}
			return nil, nil
		})
	})
	tok, _, _ := srv.Auth().Sign(map[string]any{"user": "eve"}, time.Now())
	ctx := t.Context()
	c, err := client.Dial(ctx, client.Options{URL: url, AuthToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 10)
	for _, ch := range []string{"a", "b"} {
		if err := c.Subscribe(ctx, ch, func(ch string, d json.RawMessage) { got <- ch + string(d) }); err != nil {
			t.Fatal(err)
		}
	}
	first := c.ID()
	mu.Lock()
	sockets[0].Disconnect(worker.ClosePongTimeout, "test") // the client reconnects at once
	mu.Unlock()
	testutil.Eventually(t, 3*time.Second, func() bool { return c.Reconnects.Load() == 1 && c.ID() != first }, "reconnected")
	testutil.Eventually(t, 3*time.Second, func() bool { return srv.ChannelCount() == 2 }, "resubscribed")
	if err := srv.Exchange().Publish(ctx, "b", 7); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "b7" {
			t.Fatalf("got %s", g)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no message after reconnect")
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if r, err := c.Invoke(cctx, "who", nil); err != nil || string(r) != `"eve"` {
		t.Fatalf("token not presented again after reconnect: %s %v", r, err)
	}
}

func TestSubscribeAsync(t *testing.T) {
	_, url := start(t, worker.Config{}, func(s *worker.Server) {
		s.UseInbound(func(a *worker.Action) error {
			if a.Type == worker.ActionSubscribe && a.Channel == "closed" {
				return errors.New("no entry")
			}
			return nil
		})
	})
	c, err := client.Dial(t.Context(), client.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 1)
	done := make(chan error, 2)
	c.SubscribeAsync("open", func(_ string, d json.RawMessage) { got <- string(d) }, func(err error) { done <- err })
	c.SubscribeAsync("closed", func(string, json.RawMessage) {}, func(err error) { done <- err })
	var errs int
	for range 2 {
		if <-done != nil {
			errs++
		}
	}
	if errs != 1 || strings.Join(c.Subscriptions(), ",") != "open" {
		t.Fatalf("%d refused, holding %v", errs, c.Subscriptions())
	}
	if err := c.Publish(t.Context(), "open", "hi"); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != `"hi"` {
		t.Fatalf("got %s", g)
	}
	if at := c.ReceivedAt(); time.Since(at) > 5*time.Second || time.Since(at) < 0 {
		t.Fatalf("ReceivedAt %v", at)
	}
}
