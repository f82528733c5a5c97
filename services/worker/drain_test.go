package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/pkg/codec"
	"github.com/scc-k8s/scc/services/worker"
)

// A drain closes sockets at DrainRate with 4000, and each socket keeps
// receiving, in order and without a gap, until its own close.
func TestDrainIsPacedAndSocketsReceiveUntilTheirClose(t *testing.T) {
	srv := startServer(t, worker.Config{DrainRate: 10}, nil)
	type rec struct {
		mu       sync.Mutex
		got      []int64
		closedAt time.Time
		code     int
	}
	const n = 10
	recs := make([]*rec, n)
	for i := range recs {
		r := &rec{}
		recs[i] = r
		c := client.New(client.Options{URL: srv.URL, NoReconnect: true})
		c.OnDisconnect(func(ce *client.CloseError) {
			r.mu.Lock()
			r.closedAt, r.code = time.Now(), ce.Code
			r.mu.Unlock()
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Subscribe(ctx, "news", func(_ string, d json.RawMessage) {
			v, _ := codec.Int(d)
			r.mu.Lock()
			r.got = append(r.got, v)
			r.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		cancel()
		t.Cleanup(c.Close)
	}
	var seq atomic.Int64
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = srv.Exchange().Publish(context.Background(), "news", seq.Load())
			seq.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	close(stop)
	<-pubDone
	// 10 sockets at 10 per second: the last closes about 0.9 s in.
	if took < 800*time.Millisecond || took > 3*time.Second {
		t.Errorf("drain of %d sockets at 10/s took %v", n, took)
	}
	var first, last time.Time
	for i, r := range recs {
		r.mu.Lock()
		if r.code != worker.CloseDraining {
			t.Errorf("socket %d closed with %d, want %d", i, r.code, worker.CloseDraining)
		}
		for j, v := range r.got {
			if j > 0 && v != r.got[j-1]+1 {
				t.Errorf("socket %d: %d after %d (a gap)", i, v, r.got[j-1])
				break
			}
		}
		if first.IsZero() || r.closedAt.Before(first) {
			first = r.closedAt
		}
		if r.closedAt.After(last) {
			last = r.closedAt
		}
		r.mu.Unlock()
	}
	// The last socket kept receiving while the others were closed.
	var lastGot, firstGot int
	for _, r := range recs {
		if r.closedAt.Equal(last) {
			lastGot = len(r.got)
		}
		if r.closedAt.Equal(first) {
			firstGot = len(r.got)
		}
	}
	if lastGot < firstGot+300 {
		t.Errorf("the last socket closed got %d messages, the first %d: the last should have kept receiving for most of a second", lastGot, firstGot)
	}
}

// Socket.RemoteAddr believes X-Forwarded-For only from trusted proxies,
// reading from the right.
func TestRemoteAddrBehindTrustedProxies(t *testing.T) {
	cases := []struct {
		trusted, peer, xff, want string
	}{
		{"", "10.0.0.5:1234", "1.2.3.4", "10.0.0.5"},                           // no proxy trusted
		{"10.0.0.0/8", "192.168.1.1:1", "1.2.3.4", "192.168.1.1"},              // peer not trusted
		{"10.0.0.0/8", "10.0.0.5:1", "1.2.3.4", "1.2.3.4"},                     // the gateway's word
		{"10.0.0.0/8", "10.0.0.5:1", "6.6.6.6, 1.2.3.4", "1.2.3.4"},            // a forged left part is never reached
		{"10.0.0.0/8", "10.0.0.5:1", "1.2.3.4, 10.0.0.9", "1.2.3.4"},           // two trusted hops
		{"10.0.0.0/8,127.0.0.1", "127.0.0.1:1", "garbage, 1.2.3.4", "1.2.3.4"}, // rightmost wins
		{"10.0.0.0/8", "10.0.0.5:1", "1.2.3.4, garbage", "10.0.0.5"},           // not an address: believe nothing
		{"10.0.0.0/8", "10.0.0.5:1", "", "10.0.0.5"},
	}
	for _, c := range cases {
		prefixes, err := worker.ParsePrefixes(c.trusted)
		if err != nil {
			t.Fatal(err)
		}
		seen := make(chan string, 1)
		srv, err := worker.NewServer(worker.Config{Auth: auth.Config{Key: []byte(testKey)}, TrustedProxies: prefixes,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		srv.OnConnect(func(s *worker.Socket) { seen <- s.RemoteAddr() })
		// The peer address is what net/http reports: set it.
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.RemoteAddr = c.peer
			srv.ServeHTTP(w, r)
		}))
		h := http.Header{}
		if c.xff != "" {
			h.Set("X-Forwarded-For", c.xff)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cl, err := client.Dial(ctx, client.Options{URL: "ws" + hs.URL[4:] + "/socketcluster/", Header: h, NoReconnect: true})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != c.want {
			t.Errorf("trusted %q, peer %s, X-Forwarded-For %q: RemoteAddr %q, want %q", c.trusted, c.peer, c.xff, got, c.want)
		}
		cl.Close()
		srv.Close()
		hs.Close()
	}
	if _, err := worker.ParsePrefixes("10.0.0.0/33"); err == nil {
		t.Error("a bad prefix was accepted")
	}
	if p, _ := worker.ParsePrefixes("::ffff:10.1.2.3"); len(p) != 1 || p[0] != netip.MustParsePrefix("10.1.2.3/32") {
		t.Errorf("a mapped address: %v", p)
	}
}
