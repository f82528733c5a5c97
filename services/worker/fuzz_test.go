package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/services/worker"
)

// FuzzServerMessage sends one arbitrary message on a handshaken socket and
// checks that the socket then still answers (or was closed with a code the
// protocol prescribes for that input), and that the server keeps serving
// new sockets. A panic anywhere in the server fails the run.
func FuzzServerMessage(f *testing.F) {
	for _, s := range []string{
		`{"event":"echo","data":1,"cid":2}`, `{"event":"#subscribe","data":{"channel":"c"},"cid":2}`,
		`{"event":"#publish","data":{"channel":"c","data":[1]},"cid":3}`, `{"event":"#unsubscribe","data":"c"}`,
		`{"event":"#authenticate","data":"x.y.z","cid":4}`, `{"event":"#removeAuthToken"}`,
		`{"event":"#handshake","data":{"authToken":"a"},"cid":5}`, `{"event":"#disconnect","data":{"code":4999}}`,
		`[{"event":"#subscribe","data":{"channel":"a"},"cid":6},{"event":"#publish","data":{"channel":"a"}}]`,
		`{"rid":1,"data":2}`, `{"event":"#authenticate","data":"x"}`, `{"event":"#handshake"}`,
		"", "#2", "{bad", "[1,{}]", `{"event":"#kickOut","data":{"channel":"c"}}`,
	} {
		f.Add(s, uint8(2))
		f.Add(s, uint8(1))
	}
	servers := map[int]*testServer{
		1: startServer(f, worker.Config{ProtocolVersion: 1, MaxPayload: 64 << 10}, echoSetup),
		2: startServer(f, worker.Config{ProtocolVersion: 2, MaxPayload: 64 << 10}, echoSetup),
	}
	f.Fuzz(func(t *testing.T, msg string, version uint8) {
		v := int(version%2) + 1
		s := servers[v]
		p := s.connect(t)
		p.Send(msg)
		// The message may have closed the socket; the read below tells.
		_ = p.Conn.WriteMessage(websocket.TextMessage, []byte(`{"event":"echo","data":"alive","cid":999999}`))
		for {
			frame, err := p.ReadRaw(5 * time.Second)
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					switch {
					case ce.Code == worker.CloseHandshakeRejected, ce.Code == websocket.CloseMessageTooBig:
						return // #handshake or #authenticate without cid; oversized
					case v == 1 && (ce.Code == 1000 || ce.Code >= 3000):
						return // v1 #disconnect closes with the client's code
					}
				}
				t.Fatalf("after %q: %v", msg, err)
			}
			if frame == `{"rid":999999,"data":"alive"}` || frame == `[{"rid":999999,"data":"alive"}]` ||
				len(frame) > 0 && frame[0] == '[' && contains(frame, `{"rid":999999,"data":"alive"}`) {
				break
			}
		}
		p.Conn.Close()
	})
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
