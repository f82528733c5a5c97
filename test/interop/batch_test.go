package interop

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/services/worker"
)

// Every request that carries a cid gets exactly one response, in whatever
// batch it came and whatever happens meanwhile, on every deployment: the
// standalone worker (its broker answers at once), `scc dev` and a worker
// of a cluster (their broker answers a round trip later, so a subscribe is
// still waiting when the unsubscribe or the kickOut behind it runs).
func TestBatchesAnsweredEverywhere(t *testing.T) {
	urls := map[string]func(t *testing.T) string{
		"standalone": func(t *testing.T) string {
			port, _ := serve(t, worker.ServiceConfig{}, direct)
			return "ws://127.0.0.1:" + strconv.Itoa(port) + "/socketcluster/"
		},
		"scc dev": func(t *testing.T) string {
			port, _ := serve(t, worker.ServiceConfig{}, viaGateway)
			return "ws://127.0.0.1:" + strconv.Itoa(port) + "/socketcluster/"
		},
		"scc worker --state": func(t *testing.T) string {
			c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 1, Setup: setupApp})
			return c.Workers[0].URL
		},
	}
	for _, name := range []string{"standalone", "scc dev", "scc worker --state"} {
		t.Run(name, func(t *testing.T) {
			url := urls[name](t)
			for i := range 20 { // channels on every broker, and the race run many times
				ch := "batch-" + strconv.Itoa(i)
				sub := `{"event":"#subscribe","data":{"channel":"` + ch + `"},"cid":2}`
				pub := `{"event":"#publish","data":{"channel":"` + ch + `","data":` + strconv.Itoa(i) + `},"cid":3}`
				delivery := `{"event":"#publish","data":{"channel":"` + ch + `","data":` + strconv.Itoa(i) + `}}`

				// Subscribe, publish, unsubscribe: all three answered, and the
				// publish delivered before the unsubscribe's answer, as an
				// in-process broker does it.
				p := connect(t, url)
				p.Send("[" + sub + "," + pub + `,{"event":"#unsubscribe","data":"` + ch + `","cid":4}]`)
				got := collect(t, p, 4)
				expectOnce(t, got, `{"rid":2}`, `{"rid":3}`, `{"rid":4}`, delivery)
				for _, first := range []string{delivery, `{"rid":2}`, `{"rid":3}`} {
					if before(got, `{"rid":4}`, first) {
						t.Fatalf("%s: %s came after the unsubscribe's answer: %q", ch, first, got)
					}
				}
				p.NoFrame(20 * time.Millisecond)

				// Kicked out by the server while the subscribe may be waiting.
				p.Send("[" + sub + "," + pub + `,{"event":"kickMe","data":{"channel":"` + ch + `"},"cid":4}]`)
				got = collectUntil(t, p, `{"rid":2}`, `{"rid":3}`, `{"rid":4}`)
				expectOnce(t, got, `{"rid":2}`, `{"rid":3}`, `{"rid":4}`,
					`{"event":"#kickOut","data":{"channel":"`+ch+`","message":"bye"}}`)
				if before(got, `{"event":"#kickOut","data":{"channel":"`+ch+`","message":"bye"}}`, `{"rid":2}`) {
					t.Fatalf("%s: #kickOut before the subscribe's answer: %q", ch, got)
				}

				// A #disconnect transmit (protocol 2 treats it as any other).
				p.Send("[" + sub + "," + pub + `,{"event":"#disconnect","data":{"code":4000}}]`)
				got = collect(t, p, 3)
				expectOnce(t, got, `{"rid":2}`, `{"rid":3}`, delivery)
				p.Conn.Close()
			}
		})
	}
}

func connect(t *testing.T, url string) *testutil.Peer {
	p := testutil.DialPeer(t, url)
	if r := p.Handshake(""); r["rid"] != float64(1) {
		t.Fatalf("handshake: %v", r)
	}
	return p
}

// collect reads n frames.
func collect(t *testing.T, p *testutil.Peer, n int) []string {
	t.Helper()
	var got []string
	for range n {
		got = append(got, p.Next())
	}
	return got
}

// collectUntil reads until every one of want has been seen, then a little
// longer for frames that may trail them.
func collectUntil(t *testing.T, p *testutil.Peer, want ...string) []string {
	t.Helper()
	var got []string
	for missing := len(want); missing > 0; {
		f := p.Next()
		got = append(got, f)
		for _, w := range want {
			if f == w {
				missing--
			}
		}
	}
	for {
		f, err := p.ReadRaw(50 * time.Millisecond)
		if err != nil {
			return got
		}
		if f != "" {
			got = append(got, f)
		}
	}
}

// expectOnce checks that got holds each of want exactly once (and
// possibly a delivery of the channel at most once besides).
func expectOnce(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		n := 0
		for _, g := range got {
			if g == w {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%q seen %d times in %q", w, n, got)
		}
	}
	for _, g := range got {
		if !strings.Contains(g, `"rid"`) && !strings.Contains(g, `"event":"#publish"`) && !strings.Contains(g, `"#kickOut"`) {
			t.Fatalf("unexpected frame %q in %q", g, got)
		}
	}
}

// before reports whether a comes before b in got.
func before(got []string, a, b string) bool {
	for _, g := range got {
		switch g {
		case a:
			return true
		case b:
			return false
		}
	}
	return false
}
