package worker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/codec"
	"github.com/scc-k8s/scc/services/worker"
)

func TestHandshake(t *testing.T) {
	s := startServer(t, worker.Config{}, nil)
	p := testutil.DialPeer(t, s.URL)
	r := p.Handshake("")
	data := r["data"].(map[string]any)
	if id, _ := data["id"].(string); len(id) != 20 {
		t.Errorf("id %q, want 20 characters", id)
	}
	if data["pingTimeout"] != float64(30000) {
		t.Errorf("pingTimeout %v, want 30000", data["pingTimeout"])
	}
	if data["isAuthenticated"] != false {
		t.Errorf("isAuthenticated %v", data["isAuthenticated"])
	}
	if _, ok := data["authError"]; ok {
		t.Errorf("authError present without a token: %v", data)
	}
	eventually(t, func() bool { return s.Clients() == 1 }, "one client")
}

func TestHandshakeRules(t *testing.T) {
	// The handshake timeout is short only where it is what is tested: a
	// loaded machine can take longer than 200 ms between a dial and the
	// test's first frame (the server's 4005 came first in a CI run).
	s := startServer(t, worker.Config{HandshakeTimeout: 10 * time.Second}, nil)
	t.Run("frame before handshake closes 4009", func(t *testing.T) {
		p := testutil.DialPeer(t, s.URL)
		p.Send(`{"event":"chat","data":1}`)
		p.ExpectClose(worker.CloseBeforeHandshake, 3*time.Second)
	})
	t.Run("raw message before handshake closes 4009", func(t *testing.T) {
		p := testutil.DialPeer(t, s.URL)
		p.Send(`hello`)
		p.ExpectClose(worker.CloseBeforeHandshake, 3*time.Second)
	})
	t.Run("pong before handshake closes 4009", func(t *testing.T) {
		p := testutil.DialPeer(t, s.URL)
		p.Send(``)
		p.ExpectClose(worker.CloseBeforeHandshake, 3*time.Second)
	})
	t.Run("handshake without cid closes 4008", func(t *testing.T) {
		p := testutil.DialPeer(t, s.URL)
		p.Send(`{"event":"#handshake","data":{}}`)
		p.ExpectClose(worker.CloseHandshakeRejected, 3*time.Second)
	})
	t.Run("handshake with string cid closes 4008", func(t *testing.T) {
		p := testutil.DialPeer(t, s.URL)
		p.Send(`{"event":"#handshake","data":{},"cid":"1"}`)
		p.ExpectClose(worker.CloseHandshakeRejected, 3*time.Second)
	})
	t.Run("no handshake closes 4005", func(t *testing.T) {
		s := startServer(t, worker.Config{HandshakeTimeout: 200 * time.Millisecond}, nil)
		p := testutil.DialPeer(t, s.URL)
		p.ExpectClose(worker.CloseHandshakeTimeout, 3*time.Second)
	})
	t.Run("second handshake is answered again", func(t *testing.T) {
		p := s.connect(t)
		p.Send(`{"event":"#handshake","data":{"authToken":null},"cid":7}`)
		r := p.ExpectJSON()
		if r["rid"] != float64(7) {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("handshake in a batch, then events", func(t *testing.T) {
		p := testutil.DialPeer(t, s.URL)
		p.Send(`[{"event":"#handshake","data":{},"cid":1},{"event":"#subscribe","data":{"channel":"b"},"cid":2}]`)
		if r := p.ExpectJSON(); r["rid"] != float64(1) {
			t.Fatalf("got %v", r)
		}
		p.Expect(`{"rid":2}`)
	})
}

func TestHandshakeV1(t *testing.T) {
	s := startServer(t, worker.Config{ProtocolVersion: 1, HandshakeTimeout: 200 * time.Millisecond, Path: "sc"}, nil)
	if s.Config().Path != "/sc/" {
		t.Fatalf("v1 path %q, want /sc/", s.Config().Path)
	}
	p := testutil.DialPeer(t, s.URL)
	p.Expect(`{"event":"#disconnect","data":{"code":4005}}`)
	p.ExpectClose(worker.CloseHandshakeTimeout, 3*time.Second)

	s = startServer(t, worker.Config{ProtocolVersion: 1, HandshakeTimeout: 10 * time.Second, Path: "sc"}, nil)
	p = testutil.DialPeer(t, s.URL)
	r := p.Handshake("")
	if r["data"].(map[string]any)["pingTimeout"] != float64(20000) {
		t.Fatalf("v1 pingTimeout: %v", r)
	}
}

func TestPingPong(t *testing.T) {
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			ping, pong := "", ""
			if v == 1 {
				ping, pong = "#1", "#2"
			}
			s := startServer(t, worker.Config{ProtocolVersion: v, PingInterval: 50 * time.Millisecond, PingTimeout: 300 * time.Millisecond}, nil)

			// A socket that answers pings outlives several ping timeouts.
			alive := s.connect(t)
			deadline := time.Now().Add(1200 * time.Millisecond)
			pings := 0
			for time.Now().Before(deadline) {
				m, err := alive.ReadRaw(time.Second)
				if err != nil {
					t.Fatalf("answering socket lost: %v", err)
				}
				if m == ping {
					pings++
					alive.Send(pong)
				}
			}
			if pings < 5 {
				t.Fatalf("only %d pings in 1.2 s at a 50 ms interval", pings)
			}
			alive.Send(`{"event":"#subscribe","data":{"channel":"x"},"cid":2}`)
			alive.Expect(`{"rid":2}`)

			// One that does not answer is closed with 4001.
			silent := s.connect(t)
			silent.ExpectClose(worker.ClosePongTimeout, 3*time.Second)
		})
	}
}

func TestInvokeAndTransmit(t *testing.T) {
	got := make(chan string, 1)
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.HandleProcedure("echo", func(r *worker.Request) (any, error) { return r.Data, nil })
		srv.HandleProcedure("nothing", func(r *worker.Request) (any, error) { return nil, nil })
		srv.HandleProcedure("fail", func(r *worker.Request) (any, error) {
			return nil, codec.NewError("BoomError", "boom", codec.Member{Key: "extra", Value: 1})
		})
		srv.HandleProcedure("plain", func(r *worker.Request) (any, error) { return nil, errors.New("plain failure") })
		srv.HandleProcedure("struct", func(r *worker.Request) (any, error) {
			return struct {
				OK   bool   `json:"ok"`
				Text string `json:"text"`
			}{true, "<&>"}, nil
		})
		srv.HandleReceiver("note", func(s *worker.Socket, data json.RawMessage) { got <- string(data) })
	})
	p := s.connect(t)
	p.Send(`{"event":"echo","data":{"a":[1,2,{"b":"c"}]},"cid":2}`)
	p.Expect(`{"rid":2,"data":{"a":[1,2,{"b":"c"}]}}`)
	p.Send(`{"event":"nothing","cid":3}`)
	p.Expect(`{"rid":3}`)
	p.Send(`{"event":"fail","data":1,"cid":4}`)
	p.Expect(`{"rid":4,"error":{"message":"boom","name":"BoomError","extra":1}}`)
	p.Send(`{"event":"plain","cid":5}`)
	p.Expect(`{"rid":5,"error":{"message":"plain failure","name":"Error"}}`)
	p.Send(`{"event":"struct","cid":6}`)
	p.Expect(`{"rid":6,"data":{"ok":true,"text":"<&>"}}`)
	// Nobody handles "unknown": no response at all.
	p.Send(`{"event":"unknown","cid":7}`)
	p.Send(`{"event":"note","data":"hi"}`)
	if d := <-got; d != `"hi"` {
		t.Fatalf("receiver got %s", d)
	}
	p.Send(`{"event":"echo","data":8,"cid":8}`)
	p.Expect(`{"rid":8,"data":8}`)
}

func TestServerInvokesClient(t *testing.T) {
	sockets := make(chan *worker.Socket, 1)
	s := startServer(t, worker.Config{AckTimeout: 300 * time.Millisecond}, func(srv *worker.Server) {
		srv.OnConnect(func(s *worker.Socket) { sockets <- s })
	})
	p := s.connect(t)
	sock := <-sockets
	res := make(chan string, 1)
	go func() {
		data, err := sock.Invoke(t.Context(), "ask", map[string]int{"q": 1})
		res <- fmt.Sprintf("%s %v", data, err)
	}()
	p.Expect(`{"event":"ask","data":{"q":1},"cid":1}`)
	p.Send(`{"rid":1,"data":"answer"}`)
	if r := <-res; r != `"answer" <nil>` {
		t.Fatalf("invoke result %s", r)
	}
	go func() {
		_, err := sock.Invoke(t.Context(), "ask", nil)
		res <- fmt.Sprint(err)
	}()
	p.Expect(`{"event":"ask","cid":2}`)
	p.Send(`{"rid":2,"error":{"name":"NopeError","message":"nope"}}`)
	if r := <-res; r != "NopeError: nope" {
		t.Fatalf("invoke error %s", r)
	}
	go func() {
		_, err := sock.Invoke(t.Context(), "ask", nil)
		res <- fmt.Sprint(err)
	}()
	p.Expect(`{"event":"ask","cid":3}`)
	if r := <-res; !strings.HasPrefix(r, "TimeoutError") {
		t.Fatalf("unanswered invoke: %s", r)
	}
	if err := sock.Transmit("hello", []int{1}); err != nil {
		t.Fatal(err)
	}
	p.Expect(`{"event":"hello","data":[1]}`)
}

func TestPubSub(t *testing.T) {
	s := startServer(t, worker.Config{}, nil)
	a, b := s.connect(t), s.connect(t)
	a.Send(`{"event":"#subscribe","data":{"channel":"news","waitForAuth":true,"data":{"x":1}},"cid":2}`)
	a.Expect(`{"rid":2}`)
	// Subscribing twice is acknowledged twice and delivered once.
	a.Send(`{"event":"#subscribe","data":{"channel":"news"},"cid":3}`)
	a.Expect(`{"rid":3}`)
	b.Send(`{"event":"#publish","data":{"channel":"news","data":{"n":1}},"cid":2}`)
	b.Expect(`{"rid":2}`)
	a.Expect(`{"event":"#publish","data":{"channel":"news","data":{"n":1}}}`)
	// Publish without cid: no answer, still delivered; data may be absent.
	b.Send(`{"event":"#publish","data":{"channel":"news"}}`)
	a.Expect(`{"event":"#publish","data":{"channel":"news"}}`)
	// Escaped channel names round-trip.
	a.Send(`{"event":"#subscribe","data":{"channel":"caf\u00e9 \"q\""},"cid":4}`)
	a.Expect(`{"rid":4}`)
	b.Send(`{"event":"#publish","data":{"channel":"café \"q\"","data":"☕"},"cid":3}`)
	b.Expect(`{"rid":3}`)
	a.Expect(`{"event":"#publish","data":{"channel":"café \"q\"","data":"☕"}}`)

	a.Send(`{"event":"#unsubscribe","data":"news"}`)
	a.Send(`{"event":"#unsubscribe","data":"news","cid":5}`)
	r := a.ExpectJSON()
	if r["rid"] != float64(5) || r["error"].(map[string]any)["name"] != "BrokerError" {
		t.Fatalf("unsubscribe of a channel not subscribed: %v", r)
	}
	b.Send(`{"event":"#publish","data":{"channel":"news","data":2},"cid":4}`)
	b.Expect(`{"rid":4}`)
	a.NoFrame(100 * time.Millisecond)
	eventually(t, func() bool { return s.ChannelCount() == 1 }, "one channel left, have %d", s.ChannelCount())
}

func TestPublishDisabled(t *testing.T) {
	s := startServer(t, worker.Config{DisallowClientPublish: true}, nil)
	p := s.connect(t)
	p.Send(`{"event":"#publish","data":{"channel":"c","data":1},"cid":2}`)
	p.Expect(`{"rid":2,"error":{"message":"Client publish feature is disabled","name":"InvalidActionError"}}`)
}

func TestKickOut(t *testing.T) {
	sockets := make(chan *worker.Socket, 1)
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.OnConnect(func(s *worker.Socket) { sockets <- s })
	})
	p := s.connect(t)
	sock := <-sockets
	p.Send(`{"event":"#subscribe","data":{"channel":"room"},"cid":2}`)
	p.Expect(`{"rid":2}`)
	sock.KickOut("room", "bye")
	p.Expect(`{"event":"#kickOut","data":{"channel":"room","message":"bye"}}`)
	if sock.IsSubscribed("room") {
		t.Fatal("still subscribed after kickOut")
	}
	if err := s.Exchange().Publish(t.Context(), "room", 1); err != nil {
		t.Fatal(err)
	}
	p.NoFrame(100 * time.Millisecond)
}

func TestExchange(t *testing.T) {
	s := startServer(t, worker.Config{}, nil)
	got := make(chan string, 10)
	sub, err := s.Exchange().Subscribe(t.Context(), "ex", func(ch string, data json.RawMessage) { got <- ch + " " + string(data) })
	if err != nil {
		t.Fatal(err)
	}
	p := s.connect(t)
	p.Send(`{"event":"#publish","data":{"channel":"ex","data":[1]},"cid":2}`)
	p.Expect(`{"rid":2}`)
	if g := <-got; g != "ex [1]" {
		t.Fatalf("exchange got %q", g)
	}
	sub.Unsubscribe()
	eventually(t, func() bool { return s.ChannelCount() == 0 }, "channel dropped")
}

func TestBatchesAndRaw(t *testing.T) {
	raws := make(chan string, 10)
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.HandleProcedure("n", func(r *worker.Request) (any, error) { return r.Data, nil })
		srv.OnRaw(func(s *worker.Socket, m []byte) { raws <- string(m) })
	})
	p := s.connect(t)
	var frames []string
	for i := 2; i < 12; i++ {
		frames = append(frames, fmt.Sprintf(`{"event":"n","data":%d,"cid":%d}`, i, i))
	}
	p.Send("[" + strings.Join(frames, ",") + "]")
	for i := 2; i < 12; i++ {
		p.Expect(fmt.Sprintf(`{"rid":%d,"data":%d}`, i, i))
	}
	for _, raw := range []string{"hello", "{bad json", "[1,2", "42", `"str"`, "  ", "#2x"} {
		p.Send(raw)
		select {
		case got := <-raws:
			if got != raw {
				t.Fatalf("raw hook got %q, want %q", got, raw)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("raw message %q not handed to the raw hook", raw)
		}
	}
	// A batch element that is not an object is raw too.
	p.Send(`[5,{"event":"n","data":1,"cid":20}]`)
	p.Expect(`{"rid":20,"data":1}`)
	if got := <-raws; got != `[5,{"event":"n","data":1,"cid":20}]` {
		t.Fatalf("raw element: %q", got)
	}
}

func TestWrongPathAndOrigin(t *testing.T) {
	s := startServer(t, worker.Config{Origins: "good.example:*, *:8443"}, nil)
	resp, err := http.Get(s.HTTP + "/wrong/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("wrong path: HTTP %d", resp.StatusCode)
	}
	dial := func(origin string) int {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial(s.URL, h)
		if err == nil {
			c.Close()
			return 101
		}
		return resp.StatusCode
	}
	for origin, want := range map[string]int{
		"http://good.example:1234":  101,
		"https://other.example":     403,
		"http://other.example:8443": 101,
		"":                          403,
	} {
		if got := dial(origin); got != want {
			t.Errorf("origin %q: HTTP %d, want %d", origin, got, want)
		}
	}
}

func TestHandshakeMiddleware(t *testing.T) {
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.UseHandshake(func(h *worker.Handshake) error {
			q := h.Request.URL.Query().Get("mode")
			switch {
			case h.Kind == worker.HandshakeWS && q == "ws":
				return errors.New("no upgrade for you")
			case h.Kind == worker.HandshakeSC && q == "sc":
				return codec.NewError("RejectedError", "not today")
			case h.Kind == worker.HandshakeSC && q == "code":
				return worker.WithCloseCode(errors.New("custom"), 4601)
			}
			return nil
		})
	})
	_, resp, err := websocket.DefaultDialer.Dial(s.URL+"?mode=ws", nil)
	if err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("WS middleware block: err %v, resp %v", err, resp)
	}
	p := testutil.DialPeer(t, s.URL+"?mode=sc")
	p.Send(`{"event":"#handshake","data":{},"cid":1}`)
	p.Expect(`{"rid":1,"error":{"message":"not today","name":"RejectedError"}}`)
	p.ExpectClose(worker.CloseHandshakeRejected, 3*time.Second)
	p = testutil.DialPeer(t, s.URL+"?mode=code")
	p.Send(`{"event":"#handshake","data":{},"cid":1}`)
	p.Next()
	p.ExpectClose(4601, 3*time.Second)
	s.connect(t) // no mode: allowed
}

func TestInboundMiddleware(t *testing.T) {
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.HandleProcedure("echo", func(r *worker.Request) (any, error) { return r.Data, nil })
		srv.UseInbound(func(a *worker.Action) error {
			switch {
			case a.Type == worker.ActionSubscribe && a.Channel == "secret":
				return codec.NewError("ForbiddenError", "no access")
			case a.Type == worker.ActionSubscribe && a.Channel == "quiet":
				return worker.ErrSilentBlock
			case a.Type == worker.ActionPublishIn && a.Channel == "shout":
				a.Data = json.RawMessage(`"LOUD"`)
			case a.Type == worker.ActionInvoke && a.Event == "echo":
				a.Data = json.RawMessage(`{"wrapped":` + string(a.Data) + `}`)
			}
			return nil
		})
		srv.UseOutbound(func(a *worker.Action) error {
			if a.Channel == "filtered" && string(a.Data) == `"drop"` {
				return worker.ErrSilentBlock
			}
			if a.Channel == "tagged" {
				a.Data = json.RawMessage(`{"for":"` + a.Socket.ID() + `"}`)
			}
			return nil
		})
	})
	p := s.connect(t)
	p.Send(`{"event":"#subscribe","data":{"channel":"secret"},"cid":2}`)
	p.Expect(`{"rid":2,"error":{"message":"no access","name":"ForbiddenError"}}`)
	p.Send(`{"event":"#subscribe","data":{"channel":"quiet"},"cid":3}`)
	p.Expect(`{"rid":3,"error":{"message":"The subscribe AGAction was blocked by inbound middleware","name":"SilentMiddlewareBlockedError","type":"inbound"}}`)
	p.Send(`{"event":"#subscribe","data":{"channel":"shout"},"cid":4}`)
	p.Expect(`{"rid":4}`)
	p.Send(`{"event":"#publish","data":{"channel":"shout","data":"quiet words"}}`)
	p.Expect(`{"event":"#publish","data":{"channel":"shout","data":"LOUD"}}`)
	p.Send(`{"event":"echo","data":1,"cid":5}`)
	p.Expect(`{"rid":5,"data":{"wrapped":1}}`)

	p.Send(`{"event":"#subscribe","data":{"channel":"filtered"},"cid":6}`)
	p.Expect(`{"rid":6}`)
	p.Send(`{"event":"#publish","data":{"channel":"filtered","data":"drop"}}`)
	p.Send(`{"event":"#publish","data":{"channel":"filtered","data":"keep"}}`)
	p.Expect(`{"event":"#publish","data":{"channel":"filtered","data":"keep"}}`)
	q := s.connect(t)
	q.Send(`{"event":"#subscribe","data":{"channel":"tagged"},"cid":2}`)
	q.Expect(`{"rid":2}`)
	p.Send(`{"event":"#subscribe","data":{"channel":"tagged"},"cid":7}`)
	p.Expect(`{"rid":7}`)
	p.Send(`{"event":"#publish","data":{"channel":"tagged","data":0}}`)
	a, b := p.ExpectJSON(), q.ExpectJSON()
	fa := a["data"].(map[string]any)["data"].(map[string]any)["for"]
	fb := b["data"].(map[string]any)["data"].(map[string]any)["for"]
	if fa == fb {
		t.Fatalf("outbound middleware did not give each socket its own data: %v %v", a, b)
	}
}

func TestBinaryFramesReadAsText(t *testing.T) {
	s := startServer(t, worker.Config{}, echoSetup)
	p := s.connect(t)
	if err := p.Conn.WriteMessage(websocket.BinaryMessage, []byte(`{"event":"echo","data":"bin","cid":2}`)); err != nil {
		t.Fatal(err)
	}
	p.Expect(`{"rid":2,"data":"bin"}`)
}
