package worker_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/internal/ws"
	"github.com/scc-k8s/scc/services/worker"
)

// A panic in a procedure, receiver, middleware or hook ends that socket at
// most: an invoke gets an error response, anything else closes the socket
// with 1011, and everyone else keeps being served.
func TestPanicsStayInTheirSocket(t *testing.T) {
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		echoSetup(srv)
		srv.HandleProcedure("boom", func(*worker.Request) (any, error) { panic("procedure boom") })
		srv.HandleReceiver("boom", func(*worker.Socket, json.RawMessage) { panic("receiver boom") })
		srv.UseInbound(func(a *worker.Action) error {
			if a.Event == "mwboom" || a.Channel == "mwboom" {
				panic("inbound boom")
			}
			return nil
		})
		srv.UseOutbound(func(a *worker.Action) error {
			if string(a.Data) == `"outboom"` && a.Socket.Get("victim") != nil {
				panic("outbound boom")
			}
			return nil
		})
		srv.HandleProcedure("victim", func(r *worker.Request) (any, error) { r.Socket.Set("victim", true); return nil, nil })
		srv.HandleProcedure("dboom", func(r *worker.Request) (any, error) { r.Socket.Set("dboom", true); return nil, nil })
		srv.OnDisconnect(func(sock *worker.Socket, _ int, _ string) {
			if sock.Get("dboom") != nil {
				panic("disconnect boom")
			}
		})
		srv.OnConnect(func(sock *worker.Socket) {
			if sock.Request().URL.Query().Get("boom") != "" {
				panic("connect boom")
			}
		})
	})
	watcher := s.connect(t)
	watcher.Send(`{"event":"#subscribe","data":{"channel":"watch"},"cid":2}`)
	watcher.Expect(`{"rid":2}`)
	// A panicking procedure: an error response, and the socket lives on.
	p := s.connect(t)
	p.Send(`{"event":"boom","data":1,"cid":2}`)
	p.Expect(`{"rid":2,"error":{"message":"Internal server error","name":"Error"}}`)
	p.Send(`{"event":"echo","data":1,"cid":3}`)
	p.Expect(`{"rid":3,"data":1}`)

	// Inbound middleware panicking on an invoke and on a subscribe: error
	// responses; on a transmit: 1011.
	p.Send(`{"event":"mwboom","data":1,"cid":4}`)
	p.Expect(`{"rid":4,"error":{"message":"Internal server error","name":"Error"}}`)
	p.Send(`{"event":"#subscribe","data":{"channel":"mwboom"},"cid":5}`)
	p.Expect(`{"rid":5,"error":{"message":"Internal server error","name":"Error"}}`)
	p.Send(`{"event":"echo","data":2,"cid":6}`)
	p.Expect(`{"rid":6,"data":2}`)
	p.Send(`{"event":"mwboom","data":1}`)
	p.ExpectClose(ws.CloseInternalError, 3*time.Second)

	// A panicking receiver: 1011.
	r := s.connect(t)
	r.Send(`{"event":"boom","data":1}`)
	r.ExpectClose(ws.CloseInternalError, 3*time.Second)

	// A panicking connect hook: 1011 right after the handshake.
	h := testutil.DialPeer(t, s.URL+"?boom=1")
	h.Send(handshake)
	h.ExpectClose(ws.CloseInternalError, 3*time.Second)

	// Outbound middleware panicking for one subscriber: that one is closed,
	// the others get the message.
	v := s.connect(t)
	v.Send(`{"event":"victim","cid":2}`)
	v.Expect(`{"rid":2}`)
	v.Send(`{"event":"#subscribe","data":{"channel":"watch"},"cid":3}`)
	v.Expect(`{"rid":3}`)
	if err := s.Exchange().Publish(t.Context(), "watch", "outboom"); err != nil {
		t.Fatal(err)
	}
	watcher.Expect(`{"event":"#publish","data":{"channel":"watch","data":"outboom"}}`)
	v.ExpectClose(ws.CloseInternalError, 3*time.Second)

	// A panicking server-side subscription handler: the sockets still get
	// the message.
	sub, err := s.Exchange().Subscribe(t.Context(), "watch", func(string, json.RawMessage) { panic("exchange boom") })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := s.Exchange().Publish(t.Context(), "watch", 7); err != nil {
		t.Fatal(err)
	}
	watcher.Expect(`{"event":"#publish","data":{"channel":"watch","data":7}}`)

	// A panicking disconnect hook (it runs after the socket is gone).
	d := s.connect(t)
	d.Send(`{"event":"dboom","cid":2}`)
	d.Expect(`{"rid":2}`)
	d.Conn.Close()
	eventually(t, func() bool { return metric(t, s, `scc_worker_panics_total{where="disconnect hook"}`) == "1" },
		"the disconnect hook's panic counted")

	for where, n := range map[string]string{"procedure": "1", "inbound middleware": "3", "receiver": "1",
		"connect hook": "1", "outbound middleware": "1", "exchange handler": "1"} {
		if got := metric(t, s, `scc_worker_panics_total{where="`+where+`"}`); got != n {
			t.Errorf("panics in %s: %q, want %s", where, got, n)
		}
	}
	fresh := s.connect(t)
	fresh.Send(`{"event":"echo","data":"still here","cid":2}`)
	fresh.Expect(`{"rid":2,"data":"still here"}`)
}

// Disconnect and WithCloseCode refuse codes that may not be sent.
func TestCloseCodesRefused(t *testing.T) {
	var got []error
	s := startServer(t, worker.Config{}, func(srv *worker.Server) {
		srv.HandleProcedure("close", func(r *worker.Request) (any, error) {
			for _, code := range []int{1005, 1006, 1015, 999, 1004, 2000, 5000, 65536 + 1000} {
				got = append(got, r.Socket.Disconnect(code, ""))
			}
			return nil, r.Socket.Disconnect(4321, string(make([]byte, 200))+"é")
		})
	})
	p := s.connect(t)
	p.Send(`{"event":"close","cid":2}`)
	p.ExpectClose(4321, 3*time.Second) // the close goes before the response
	for i, err := range got {
		if !errors.Is(err, ws.ErrCloseCode) {
			t.Errorf("code %d: %v, want ws.ErrCloseCode", i, err)
		}
	}
	if err := worker.WithCloseCode(errors.New("no"), 1006); errors.Is(err, ws.ErrCloseCode) == false {
		t.Errorf("WithCloseCode(1006): %v", err)
	}
}

// A binary frame is read as text, as socketcluster-server reads it: bytes
// that are not UTF-8 arrive at subscribers as U+FFFD, never as an invalid
// text frame.
func TestBinaryPublishNotUTF8(t *testing.T) {
	s := startServer(t, worker.Config{}, nil)
	sub := s.connect(t)
	sub.Send(`{"event":"#subscribe","data":{"channel":"c"},"cid":2}`)
	sub.Expect(`{"rid":2}`)
	p := s.connect(t)
	if err := p.Conn.WriteMessage(websocket.BinaryMessage, []byte(`{"event":"#publish","data":{"channel":"c","data":"a`+"\xff\xfe"+`b"},"cid":2}`)); err != nil {
		t.Fatal(err)
	}
	p.Expect(`{"rid":2}`)
	sub.Expect(`{"event":"#publish","data":{"channel":"c","data":"a` + "\ufffd" + `b"}}`)
}
