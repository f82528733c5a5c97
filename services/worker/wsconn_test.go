package worker_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/services/worker"
)

func TestUpgradeRejects(t *testing.T) {
	s := startServer(t, worker.Config{}, nil)
	ws := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	path := s.Config().Path
	for _, c := range []struct {
		name   string
		method string
		edit   func(h http.Header)
		status int
		body   string
	}{
		{"plain GET", "GET", func(h http.Header) { h.Del("Connection"); h.Del("Upgrade") }, 400, "'upgrade' token not found"},
		{"no Upgrade", "GET", func(h http.Header) { h.Del("Upgrade") }, 400, "'websocket' token not found"},
		{"POST", "POST", func(http.Header) {}, 405, "request method is not GET"},
		{"version 8", "GET", func(h http.Header) { h.Set("Sec-Websocket-Version", "8") }, 400, "unsupported version"},
		{"short key", "GET", func(h http.Header) { h.Set("Sec-Websocket-Key", "c2hvcnQ=") }, 400, "Sec-WebSocket-Key"},
	} {
		h := ws.Clone()
		c.edit(h)
		req, _ := http.NewRequest(c.method, s.HTTP+path, nil)
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body := make([]byte, 512)
		n, _ := resp.Body.Read(body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(body[:n]), c.body) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, resp.StatusCode, body[:n], c.status, c.body)
		}
		if c.name == "version 8" && resp.Header.Get("Sec-Websocket-Version") != "13" {
			t.Errorf("version 8: no Sec-Websocket-Version: 13 in the answer")
		}
	}
	// The RFC 6455 example key gets the RFC's accept value.
	req, _ := http.NewRequest("GET", s.HTTP+path, nil)
	req.Header = ws.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("101 expected with the RFC's accept value: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestFrameSizes(t *testing.T) {
	// Responses of every header length (7-bit, 16-bit, 64-bit) and on both
	// sides of the copy/writev limit reach a standard client intact.
	s := startServer(t, worker.Config{MaxPayload: 1 << 20}, echoSetup)
	p := s.connect(t)
	for i, n := range []int{0, 100, 125, 126, 1000, 65535, 65536, 70000, 300000} {
		data := `"` + strings.Repeat("a", n) + `"`
		p.Send(`{"event":"echo","data":` + data + `,"cid":` + strconv.Itoa(i+10) + `}`)
		p.Expect(`{"rid":` + strconv.Itoa(i+10) + `,"data":` + data + `}`)
	}
	// A close reason too long for a control frame is cut, not dropped.
	long := strings.Repeat("r", 300)
	s.HandleReceiver("bye", func(sock *worker.Socket, _ json.RawMessage) { sock.Disconnect(4321, long) })
	c, _, err := websocket.DefaultDialer.Dial(s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.WriteMessage(websocket.TextMessage, []byte(`[{"event":"#handshake","data":{},"cid":1},{"event":"bye"}]`))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 4321 || ce.Text != long[:123] {
			t.Fatalf("close: %v", err)
		}
		break
	}
}

func TestSocketKeepsRequest(t *testing.T) {
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.HandleProcedure("req", func(r *worker.Request) (any, error) {
			q := r.Socket.Request()
			return map[string]any{"x": q.Header.Get("X-Test"), "key": q.Header.Get("Sec-Websocket-Key"),
				"query": q.URL.Query().Get("room"), "ctx": q.Context() != nil}, nil
		})
	})
	c, _, err := websocket.DefaultDialer.Dial(s.URL+"?room=blue", http.Header{"X-Test": {"yes"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.WriteMessage(websocket.TextMessage, []byte(`[{"event":"#handshake","data":{},"cid":1},{"event":"req","cid":2}]`))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(msg), `"rid":2`) {
			if !strings.Contains(string(msg), `{"ctx":true,"key":"","query":"blue","x":"yes"}`) {
				t.Fatalf("kept request: %s", msg)
			}
			return
		}
	}
}
