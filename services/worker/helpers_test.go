package worker_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/services/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testKey = "test-secret"

type testServer struct {
	*worker.Server
	URL  string // ws://.../socketcluster/
	HTTP string // http://...
}

// startServer runs a worker on 127.0.0.1:0; setup registers handlers.
func startServer(t testing.TB, cfg worker.Config, setup func(*worker.Server)) *testServer {
	t.Helper()
	if cfg.Auth.Key == nil && cfg.Auth.PublicKeyPEM == nil {
		cfg.Auth.Key = []byte(testKey)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := worker.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(srv)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	path := srv.Config().Path
	return &testServer{Server: srv, URL: "ws" + strings.TrimPrefix(hs.URL, "http") + path, HTTP: hs.URL}
}

// connect dials and completes the handshake.
func (s *testServer) connect(t testing.TB) *testutil.Peer {
	t.Helper()
	p := testutil.DialPeer(t, s.URL)
	r := p.Handshake("")
	if r["rid"] != float64(1) {
		t.Fatalf("handshake response %v", r)
	}
	return p
}

func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, cond, msg, args...)
}
