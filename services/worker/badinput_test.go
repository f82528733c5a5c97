package worker_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/services/worker"
)

func echoSetup(srv *worker.Server) {
	srv.HandleProcedure("echo", func(r *worker.Request) (any, error) { return r.Data, nil })
}

// metric returns the value line of a metric from the server's /metrics.
func metric(t *testing.T, s *testServer, name string) string {
	t.Helper()
	rec := &strings.Builder{}
	req, _ := http.NewRequest("GET", "/metrics", nil)
	w := &recorder{header: http.Header{}, body: rec}
	s.MetricsHandler().ServeHTTP(w, req)
	for _, line := range strings.Split(rec.String(), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

type recorder struct {
	header http.Header
	body   io.Writer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(int)             {}

func TestWrongTypes(t *testing.T) {
	s := startServer(t, worker.Config{MaxChannelNameLength: 64}, echoSetup)
	p := s.connect(t)
	long := strings.Repeat("x", 65)
	cases := []struct{ send, want string }{
		{`{"event":"#subscribe","data":{"channel":5},"cid":2}`, `{"rid":2,"error":{"message":"Subscribe channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#subscribe","data":"c","cid":2}`, `{"rid":2,"error":{"message":"Subscribe channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#subscribe","data":null,"cid":2}`, `{"rid":2,"error":{"message":"Subscribe channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#subscribe","cid":2}`, `{"rid":2,"error":{"message":"Subscribe channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#subscribe","data":{"channel":"` + long + `"},"cid":2}`, `{"rid":2,"error":{"message":"Channel name exceeds the maximum length of 64 bytes","name":"InvalidActionError"}}`},
		{`{"event":"#publish","data":{"channel":[1]},"cid":2}`, `{"rid":2,"error":{"message":"Publish channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#publish","data":"x","cid":2}`, `{"rid":2,"error":{"message":"Publish channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#publish","data":{"channel":"` + long + `"},"cid":2}`, `{"rid":2,"error":{"message":"Channel name exceeds the maximum length of 64 bytes","name":"InvalidActionError"}}`},
		{`{"event":"#unsubscribe","data":{},"cid":2}`, `{"rid":2,"error":{"message":"Unsubscribe channel name was malformatted","name":"InvalidActionError"}}`},
		{`{"event":"#authenticate","data":{},"cid":2}`, `{"rid":2,"error":{"message":"Invalid token format - Token must be a string","name":"AuthTokenError","isBadToken":true}}`},
		{`{"event":"#authenticate","data":null,"cid":2}`, `{"rid":2,"error":{"message":"jwt must be provided","name":"AuthTokenInvalidError","isBadToken":true}}`},
		{`{"event":"#handshake","data":"str","cid":2}`, ``}, // answered as a handshake without token
		{`{"event":1,"cid":2}`, ``},                         // not an event: raw
		{`{"event":"echo","cid":"2"}`, ``},                  // string cid: a transmit
		{`{"event":"echo","cid":null}`, ``},
		{`{"rid":"x","data":1}`, ``},
		{`{"rid":99}`, ``}, // a response nobody waits for
		{`{"EVENT":"echo","CID":2}`, ``},
		{`{"event":"#subscribe","data":{"channel":"c"}}`, ``}, // no cid: ignored (19.x)
		{`{"event":"#publish","data":{"channel":5}}`, ``},
		{`null`, ``},
		{`[]`, ``},
		{`[[[[[]]]]]`, ``},
		{`{"event":"echo","data":1,"cid":2,}`, ``}, // JSON.parse fails: raw
		{"{\"event\":\"echo\",\"data\":\"\x00\",\"cid\":2}", ``},
	}
	for i, c := range cases {
		p.Send(c.send)
		if strings.HasPrefix(c.send, `{"event":"#authenticate"`) {
			if got := p.Next(); got != c.want {
				t.Errorf("%s: got %s, want %s", c.send, got, c.want)
			}
			p.Expect(`{"event":"#removeAuthToken"}`)
		} else if c.want != "" {
			if got := p.Next(); got != c.want {
				t.Errorf("%s: got %s, want %s", c.send, got, c.want)
			}
		} else if strings.Contains(c.send, "#handshake") {
			if r := p.ExpectJSON(); r["rid"] != float64(2) {
				t.Errorf("%s: got %v", c.send, r)
			}
		}
		// The socket still works after each.
		cid := 100 + i
		p.Send(fmt.Sprintf(`{"event":"echo","data":%d,"cid":%d}`, i, cid))
		p.Expect(fmt.Sprintf(`{"rid":%d,"data":%d}`, cid, i))
	}
}

func TestOversizedFrame(t *testing.T) {
	s := startServer(t, worker.Config{MaxPayload: 4096}, echoSetup)
	other := s.connect(t)
	p := s.connect(t)
	p.Send(`{"event":"echo","data":"` + strings.Repeat("a", 5000) + `","cid":2}`)
	p.ExpectClose(websocket.CloseMessageTooBig, 3*time.Second)
	other.Send(`{"event":"echo","data":"` + strings.Repeat("a", 4000) + `","cid":2}`)
	if got := other.Next(); len(got) < 4000 {
		t.Fatalf("other socket: %q", got)
	}
	eventually(t, func() bool { return s.Clients() == 1 }, "oversized socket gone")
}

func TestTenThousandSubscribes(t *testing.T) {
	s := startServer(t, worker.Config{}, echoSetup)
	other := s.connect(t)
	p := s.connect(t)
	const n = 10000
	var batch []string
	for i := 0; i < n; i++ {
		batch = append(batch, fmt.Sprintf(`{"event":"#subscribe","data":{"channel":"c%d"},"cid":%d}`, i, i+2))
		if len(batch) == 500 {
			p.Send("[" + strings.Join(batch, ",") + "]")
			batch = batch[:0]
		}
	}
	ok, refused := 0, 0
	for i := 0; i < n; i++ {
		f := p.Next()
		switch {
		case f == fmt.Sprintf(`{"rid":%d}`, i+2):
			ok++
		case strings.Contains(f, `"name":"BrokerError"`) && strings.Contains(f, "channel subscription limit of 1000"):
			refused++
		default:
			t.Fatalf("subscribe %d: %s", i, f)
		}
	}
	if ok != 1000 || refused != n-1000 {
		t.Fatalf("%d subscribed, %d refused; want 1000 and %d", ok, refused, n-1000)
	}
	if s.ChannelCount() != 1000 {
		t.Fatalf("%d channels", s.ChannelCount())
	}
	other.Send(`{"event":"echo","data":1,"cid":2}`)
	other.Expect(`{"rid":2,"data":1}`)
	p.Conn.Close()
	eventually(t, func() bool { return s.ChannelCount() == 0 }, "channels released, %d left", s.ChannelCount())
}

func TestSlowConsumer(t *testing.T) {
	s := startServer(t, worker.Config{MaxPendingBytes: 256 << 10}, nil)
	// A socket that subscribes and then never reads again.
	slow, _, err := websocket.DefaultDialer.Dial(s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.WriteMessage(websocket.TextMessage, []byte(`[{"event":"#handshake","data":{},"cid":1},{"event":"#subscribe","data":{"channel":"firehose"},"cid":2}]`))
	good := s.connect(t)
	good.Send(`{"event":"#subscribe","data":{"channel":"firehose"},"cid":2}`)
	good.Expect(`{"rid":2}`)
	eventually(t, func() bool { return metric(t, s, "scc_worker_subscriptions") == "2" }, "two subscriptions")

	payload := `"` + strings.Repeat("z", 1000) + `"`
	const n = 30000 // 30 MB: more than any socket buffer
	// Publish in steps of 100 that the good socket keeps up with.
	received := make(chan struct{}, 1)
	go func() {
		for i := 0; i < n; i++ {
			s.Exchange().PublishAsync("firehose", []byte(payload), nil)
			if i%100 == 99 {
				select {
				case <-received:
				case <-time.After(5 * time.Second):
					return
				}
			}
		}
	}()
	for i := 0; i < n; i++ {
		if f := good.Next(); !strings.HasPrefix(f, `{"event":"#publish"`) {
			t.Fatalf("message %d: %.80s", i, f)
		}
		if i%100 == 99 {
			received <- struct{}{}
		}
	}
	eventually(t, func() bool { return metric(t, s, "scc_worker_slow_consumer_closes_total") == "1" }, "slow consumer counted")
	eventually(t, func() bool { return s.Clients() == 1 }, "slow consumer closed")
}

func TestWriteTimeout(t *testing.T) {
	// A peer that stops reading with less queued than MaxPendingBytes: the
	// server's write blocks once the socket buffers are full, and the
	// sweeper cuts it after WriteTimeout (not the slow-consumer limit).
	s := startServer(t, worker.Config{MaxPendingBytes: 1 << 30, WriteTimeout: 300 * time.Millisecond}, nil)
	stuck, _, err := websocket.DefaultDialer.Dial(s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	_ = stuck.WriteMessage(websocket.TextMessage, []byte(`[{"event":"#handshake","data":{},"cid":1},{"event":"#subscribe","data":{"channel":"firehose"},"cid":2}]`))
	eventually(t, func() bool { return metric(t, s, "scc_worker_subscriptions") == "1" }, "subscribed")
	good := s.connect(t)

	payload := []byte(`"` + strings.Repeat("z", 64<<10) + `"`)
	for i := 0; i < 1000 && s.Clients() == 2; i++ { // up to 64 MB, more than any socket buffer
		s.Exchange().PublishAsync("firehose", payload, nil)
		time.Sleep(time.Millisecond)
	}
	eventually(t, func() bool { return s.Clients() == 1 }, "stuck writer cut")
	if got := metric(t, s, "scc_worker_slow_consumer_closes_total"); got != "0" {
		t.Fatalf("closed as a slow consumer (%s), not by the write timeout", got)
	}
	good.Send(`{"event":"#subscribe","data":{"channel":"after"},"cid":2}`)
	good.Expect(`{"rid":2}`)
}
