package worker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
		if !utf8.ValidString(msg) {
			p.ExpectClose(1007, 5*time.Second) // a text message that is not UTF-8
			return
		}
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

// FuzzPublishSubscribe subscribes one socket to a fuzzed channel and
// publishes fuzzed data to it from another, in a text or a binary frame.
// Whatever the input, the publisher's cid gets exactly one response (or,
// for a text frame that is not UTF-8, the publisher is closed with 1007);
// an acknowledged publish reaches the subscriber once, with the data it
// was sent (bytes that are not UTF-8 in a binary frame read as U+FFFD);
// and nothing the publisher sends reaches the subscriber as invalid UTF-8.
// After each input a sentinel published on another channel must be the
// subscriber's next frame: nothing else arrived in between.
func FuzzPublishSubscribe(f *testing.F) {
	for _, c := range []struct {
		ch, data string
		binary   bool
	}{
		{"c", `{"a":1}`, false}, {"c", `"\xff\xfe"`, false}, {"c", `"\xff\xfe"`, true}, {"", `null`, false},
		{"caf\xc3\xa9", `[1,2,"\u0000"]`, false}, {strings.Repeat("x", 1025), `1`, false}, {"c", `{bad`, false},
		{"c", `"\ud800"`, true}, {"#c", `1e999`, false}, {"sentinel", `2`, false},
	} {
		f.Add(c.ch, c.data, c.binary)
	}
	s := startServer(f, worker.Config{ProtocolVersion: 2, MaxPayload: 64 << 10, SocketChannelLimit: -1}, echoSetup)
	sub, pub := s.connect(f), s.connect(f)
	sub.Send(`{"event":"#subscribe","data":{"channel":"sentinel"},"cid":2}`)
	sub.Expect(`{"rid":2}`)
	n := 0
	f.Fuzz(func(t *testing.T, ch, data string, binary bool) {
		n++
		sub.Bind(t)
		pub.Bind(t)
		sentinel := func() {
			t.Helper()
			mark := strconv.Itoa(n)
			if err := s.Exchange().Publish(t.Context(), "sentinel", json.RawMessage(mark)); err != nil {
				t.Fatal(err)
			}
			sub.Expect(`{"event":"#publish","data":{"channel":"sentinel","data":` + mark + `}}`)
		}
		chJSON, _ := json.Marshal(ch)  // a valid JSON string; what is not UTF-8 becomes U+FFFD
		subscribed := ch == "sentinel" // subscribed throughout
		if !subscribed {
			sub.Send(`{"event":"#subscribe","data":{"channel":` + string(chJSON) + `},"cid":3}`)
			subscribed = sub.Next() == `{"rid":3}`
			if subscribed {
				defer func() {
					sub.Send(`{"event":"#unsubscribe","data":` + string(chJSON) + `,"cid":4}`)
					sub.Expect(`{"rid":4}`)
				}()
			}
		}
		frame := `{"event":"#publish","data":{"channel":` + string(chJSON) + `,"data":` + data + `},"cid":3}`
		op := websocket.TextMessage
		if binary {
			op = websocket.BinaryMessage
		}
		if !binary && !utf8.ValidString(frame) {
			p := s.connect(t) // this one gets closed
			if err := p.Conn.WriteMessage(op, []byte(frame)); err != nil {
				t.Fatal(err)
			}
			p.ExpectClose(1007, 3*time.Second)
			sentinel()
			return
		}
		if err := pub.Conn.WriteMessage(op, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		read := strings.ToValidUTF8(frame, "\ufffd")
		var parsed map[string]any
		if decode([]byte(read), &parsed) != nil {
			// Not a JSON object: a raw message, never answered.
			pub.Send(`{"event":"echo","data":0,"cid":4}`)
			pub.Expect(`{"rid":4,"data":0}`)
			sentinel()
			return
		}
		resp := pub.ExpectJSON()
		if resp["rid"] != float64(3) {
			t.Fatalf("publish of %q: response %v", frame, resp)
		}
		if resp["error"] != nil || !subscribed {
			sentinel()
			return
		}
		got := sub.Next()
		if !utf8.ValidString(got) {
			t.Fatalf("delivery is not UTF-8: %q", got)
		}
		var d struct {
			Event string
			Data  struct {
				Channel string
				Data    json.RawMessage
			}
		}
		if err := json.Unmarshal([]byte(got), &d); err != nil {
			t.Fatalf("delivery %q: %v", got, err)
		}
		var want any
		if pd, ok := parsed["data"].(map[string]any); ok {
			want = pd["data"]
		}
		var have any
		_ = decode(d.Data.Data, &have)
		if d.Event != "#publish" || !reflect.DeepEqual(have, want) {
			t.Fatalf("delivery %q for publish %q", got, frame)
		}
		sentinel()
	})
}

// decode unmarshals JSON keeping numbers as written (1e999 is valid JSON).
func decode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}
