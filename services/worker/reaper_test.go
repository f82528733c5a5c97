package worker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/services/worker"
)

// Disconnect hooks run for every socket that completed its handshake, with
// the code and reason it closed with, and a hook that blocks holds up only
// its own socket: the others are torn down and their hooks run meanwhile.
func TestDisconnectHooks(t *testing.T) {
	type closed struct {
		code   int
		reason string
	}
	var mu sync.Mutex
	seen := map[string]closed{}
	var blockID string
	release := make(chan struct{})
	var connected []string
	srv := startServer(t, worker.Config{}, func(s *worker.Server) {
		s.OnConnect(func(sock *worker.Socket) { mu.Lock(); connected = append(connected, sock.ID()); mu.Unlock() })
		s.OnDisconnect(func(sock *worker.Socket, code int, reason string) {
			mu.Lock()
			seen[sock.ID()] = closed{code, reason}
			block := sock.ID() == blockID
			mu.Unlock()
			if block {
				<-release
			}
		})
	})
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) })

	first := srv.connect(t)
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(connected) == 1 }, "the first socket's connect hook")
	mu.Lock()
	blockID = connected[0]
	mu.Unlock()
	first.Conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4321, "going"))
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); _, ok := seen[blockID]; return ok }, "the blocking hook ran")

	// While that hook blocks, 20 more sockets come and go, and one that
	// never completed its handshake goes too.
	var peers []*testutil.Peer
	for range 20 {
		peers = append(peers, srv.connect(t))
	}
	bare := testutil.DialPeer(t, srv.URL)
	eventually(t, func() bool { return srv.Clients() == 21 }, "20 sockets and one without a handshake")
	for _, p := range peers {
		p.Conn.Close() // no close frame: 1006
	}
	bare.Conn.Close()
	eventually(t, func() bool { return srv.Clients() == 0 }, "every socket torn down while a hook blocks")
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 21 }, "a hook for each of the 21 handshaken sockets")
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 21 {
		t.Errorf("hooks ran for %d sockets, want 21 (not for the one without a handshake)", len(seen))
	}
	for id, c := range seen {
		want := closed{worker.CloseAbnormal, ""}
		if id == blockID {
			want = closed{4321, "going"}
		}
		if c != want {
			t.Errorf("socket %s: hook got %+v, want %+v", id, c, want)
		}
	}
}
