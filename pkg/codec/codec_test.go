package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeFrames(t *testing.T) {
	cases := []struct {
		name  string
		msg   string
		frame Frame
	}{
		{"transmit", `{"event":"chat","data":{"a":1}}`, Frame{Event: "chat", HasEvent: true, Data: json.RawMessage(`{"a":1}`)}},
		{"invoke", `{"event":"login","data":"x","cid":2}`, Frame{Event: "login", HasEvent: true, Data: json.RawMessage(`"x"`), CID: json.RawMessage(`2`)}},
		{"invoke without data", `{"event":"login","cid":9}`, Frame{Event: "login", HasEvent: true, CID: json.RawMessage(`9`)}},
		{"success", `{"rid":2,"data":{"ok":true}}`, Frame{RID: json.RawMessage(`2`), Data: json.RawMessage(`{"ok":true}`)}},
		{"failure", `{"rid":2,"error":{"name":"BoomError","message":"boom","extra":1}}`, Frame{RID: json.RawMessage(`2`), Error: json.RawMessage(`{"name":"BoomError","message":"boom","extra":1}`)}},
		{"bare string error", `{"rid":3,"error":"plain string error"}`, Frame{RID: json.RawMessage(`3`), Error: json.RawMessage(`"plain string error"`)}},
		{"handshake", `{"event":"#handshake","data":{"authToken":null},"cid":1}`, Frame{Event: "#handshake", HasEvent: true, Data: json.RawMessage(`{"authToken":null}`), CID: json.RawMessage(`1`)}},
		{"whitespace", " \n\t{ \"event\" : \"a\" , \"cid\" : 5 }\r\n", Frame{Event: "a", HasEvent: true, CID: json.RawMessage(`5`)}},
		{"escaped key", `{"ev\u0065nt":"x","c\u0069d":3}`, Frame{Event: "x", HasEvent: true, CID: json.RawMessage(`3`)}},
		{"escaped event", `{"event":"\u0023publish"}`, Frame{Event: "#publish", HasEvent: true}},
		{"last duplicate wins", `{"event":"a","event":"b"}`, Frame{Event: "b", HasEvent: true}},
		{"keys are case-sensitive", `{"EVENT":"a","Cid":1}`, Frame{}},
		{"non-string event", `{"event":1,"cid":1}`, Frame{CID: json.RawMessage(`1`)}},
		{"string cid", `{"event":"a","cid":"1"}`, Frame{Event: "a", HasEvent: true}},
		{"null data", `{"event":"a","data":null}`, Frame{Event: "a", HasEvent: true, Data: json.RawMessage(`null`)}},
		{"float cid", `{"event":"a","cid":1.5}`, Frame{Event: "a", HasEvent: true, CID: json.RawMessage(`1.5`)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frames, batch, raw := Decode([]byte(c.msg), nil)
			if raw || batch || len(frames) != 1 {
				t.Fatalf("raw %v batch %v frames %d", raw, batch, len(frames))
			}
			if !equalFrame(frames[0], c.frame) {
				t.Fatalf("got %+v\nwant %+v", frames[0], c.frame)
			}
		})
	}
}

func equalFrame(a, b Frame) bool {
	return a.Event == b.Event && a.HasEvent == b.HasEvent && string(a.CID) == string(b.CID) &&
		string(a.RID) == string(b.RID) && string(a.Data) == string(b.Data) && string(a.Error) == string(b.Error)
}

func TestDecodeBatch(t *testing.T) {
	frames, batch, raw := Decode([]byte(`[{"event":"a","cid":1}, 7 ,{"rid":1},"s",[1]]`), nil)
	if raw || !batch || len(frames) != 5 {
		t.Fatalf("raw %v batch %v frames %d", raw, batch, len(frames))
	}
	if frames[0].Event != "a" || frames[2].RID == nil {
		t.Fatalf("frames %+v", frames)
	}
	for _, i := range []int{1, 3, 4} {
		if frames[i].HasEvent || frames[i].RID != nil {
			t.Fatalf("element %d should be no frame: %+v", i, frames[i])
		}
	}
	if f, b, r := Decode([]byte(`[]`), nil); r || !b || len(f) != 0 {
		t.Fatal("empty batch")
	}
}

func TestDecodeRaw(t *testing.T) {
	for _, msg := range []string{"", "#1", "#2", "hello", "42", `"s"`, "null", "true", "{", "[", "{bad", `{"a":1}x`, `[1,]`, "  x", "{\"a\":\"\x01\"}"} {
		if _, _, raw := Decode([]byte(msg), nil); !raw {
			t.Errorf("%q should be raw", msg)
		}
	}
}

func TestField(t *testing.T) {
	obj := json.RawMessage(` {"channel":"c","data":{"channel":"inner"},"n":[1,{"x":"}"}],"s":"a\"b"} `)
	for key, want := range map[string]string{"channel": `"c"`, "data": `{"channel":"inner"}`, "n": `[1,{"x":"}"}]`, "s": `"a\"b"`} {
		got, ok := Field(obj, key)
		if !ok || string(got) != want {
			t.Errorf("Field %s = %s %v, want %s", key, got, ok, want)
		}
	}
	if _, ok := Field(obj, "missing"); ok {
		t.Error("missing field found")
	}
	if _, ok := Field(json.RawMessage(`"str"`), "a"); ok {
		t.Error("field of a string")
	}
	if s, ok := String(json.RawMessage(`"caf\u00e9\n"`)); !ok || s != "café\n" {
		t.Errorf("String = %q %v", s, ok)
	}
	if n, ok := Int(json.RawMessage(`12`)); !ok || n != 12 {
		t.Errorf("Int = %d %v", n, ok)
	}
	if _, ok := Int(json.RawMessage(`"12"`)); ok {
		t.Error("Int of a string")
	}
}

func TestEncode(t *testing.T) {
	cases := []struct{ got, want string }{
		{string(AppendEvent(nil, "chat", json.RawMessage(`{"a":1}`), 0)), `{"event":"chat","data":{"a":1}}`},
		{string(AppendEvent(nil, "login", json.RawMessage(`"x"`), 2)), `{"event":"login","data":"x","cid":2}`},
		{string(AppendEvent(nil, "login", nil, 9)), `{"event":"login","cid":9}`},
		{string(AppendEvent(nil, "#removeAuthToken", json.RawMessage(`null`), 0)), `{"event":"#removeAuthToken","data":null}`},
		{string(AppendPublish(nil, "c", json.RawMessage(`{"x":[1]}`))), `{"event":"#publish","data":{"channel":"c","data":{"x":[1]}}}`},
		{string(AppendPublish(nil, "c", nil)), `{"event":"#publish","data":{"channel":"c"}}`},
		{string(AppendResponse(nil, json.RawMessage(`2`), json.RawMessage(`{"ok":true}`))), `{"rid":2,"data":{"ok":true}}`},
		{string(AppendResponse(nil, json.RawMessage(`7`), nil)), `{"rid":7}`},
		{string(AppendErrorResponse(nil, json.RawMessage(`2`), NewError("BoomError", "boom", Member{"extra", 1}))), `{"rid":2,"error":{"message":"boom","name":"BoomError","extra":1}}`},
		{string(AppendErrorResponse(nil, json.RawMessage(`3`), errors.New("plain"))), `{"rid":3,"error":{"message":"plain","name":"Error"}}`},
		{string(AppendString(nil, "a\"b\\c\n\r\t\b\f\x01<>&\u2028é")), `"a\"b\\c\n\r\t\b\f\u0001<>&` + "\u2028" + `é"`},
		{string(AppendString(nil, "bad\xffutf8")), `"bad\ufffdutf8"`},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got  %s\nwant %s", c.got, c.want)
		}
	}
}

func TestErrors(t *testing.T) {
	e := NewError(AuthTokenExpiredError, "jwt expired", Member{"expiry", "2026-01-01T00:00:00.000Z"}, Member{"isBadToken", true})
	b, _ := json.Marshal(e)
	if string(b) != `{"message":"jwt expired","name":"AuthTokenExpiredError","expiry":"2026-01-01T00:00:00.000Z","isBadToken":true}` {
		t.Fatalf("dehydrated %s", b)
	}
	p := ParseError(b)
	if p.Name != AuthTokenExpiredError || p.Message != "jwt expired" {
		t.Fatalf("hydrated %+v", p)
	}
	if v, _ := p.Get("isBadToken"); v != true {
		t.Fatalf("isBadToken %v", v)
	}
	if p := ParseError(json.RawMessage(`"plain"`)); p.Name != "Error" || p.Message != "plain" {
		t.Fatalf("bare string %+v", p)
	}
	if ParseError(nil) != nil || ParseError(json.RawMessage(`null`)) != nil {
		t.Fatal("null error")
	}
	if e.With("isBadToken", false).Error() != "AuthTokenExpiredError: jwt expired" {
		t.Fatal("Error()")
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	data := json.RawMessage(`{"from":"alice","text":"hello world, this is a message"}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPublish(buf[:0], "room:lobby", data)
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	msg := []byte(`{"event":"#publish","data":{"channel":"room:lobby","data":{"from":"alice","text":"hello"}},"cid":42}`)
	frames := make([]Frame, 0, 1)
	b.ReportAllocs()
	for b.Loop() {
		frames, _, _ = Decode(msg, frames[:0])
		_, _ = Field(frames[0].Data, "channel")
	}
}

// ---- fuzzing: every parser of client input ----

func seeds(f *testing.F) {
	for _, s := range []string{
		`{"event":"chat","data":{"a":1}}`, `{"event":"login","data":"x","cid":2}`, `{"rid":2,"data":{"ok":true}}`,
		`{"rid":2,"error":{"name":"BoomError","message":"boom","extra":1}}`, `{"rid":3,"error":"plain string error"}`,
		`{"event":"#handshake","data":{"authToken":null},"cid":1}`, `[{"event":"a","cid":1},{"rid":1}]`,
		`{"event":"#subscribe","data":{"channel":"c","waitForAuth":true,"data":null},"cid":7}`,
		`{"ev\u0065nt":"x"}`, "", "#2", "{bad", "[1,2", `{"a":"\ud800"}`, `[[[[[[]]]]]]`, `{"event":"a","cid":1e400}`,
	} {
		f.Add([]byte(s))
	}
}

func FuzzDecode(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		frames, batch, raw := Decode(msg, nil)
		if raw {
			return
		}
		if !json.Valid(msg) {
			t.Fatalf("decoded invalid JSON %q", msg)
		}
		if batch {
			// A batch decodes as its elements do one by one.
			var els []json.RawMessage
			if err := json.Unmarshal(msg, &els); err != nil || len(els) != len(frames) {
				t.Fatalf("batch %q: %d frames, %d elements (%v)", msg, len(frames), len(els), err)
			}
			for i, el := range els {
				one := []Frame{{}} // what a non-object element yields
				if IsObject(el) {
					one, _, _ = Decode(el, nil)
				}
				if !equalFrame(one[0], frames[i]) {
					t.Fatalf("batch %q element %d: %+v alone, %+v in the batch", msg, i, one[0], frames[i])
				}
			}
		}
		for _, fr := range frames {
			for _, v := range []json.RawMessage{fr.CID, fr.RID, fr.Data, fr.Error} {
				if v != nil && !json.Valid(v) {
					t.Fatalf("member %q of %q is not valid JSON", v, msg)
				}
			}
			if fr.HasEvent {
				out := AppendEvent(nil, fr.Event, fr.Data, 1)
				if !json.Valid(out) {
					t.Fatalf("re-encoded %q invalid", out)
				}
			}
		}
	})
}

func FuzzField(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		if !json.Valid(msg) {
			return
		}
		var m map[string]json.RawMessage
		isObj := json.Unmarshal(msg, &m) == nil
		for _, key := range []string{"event", "data", "cid", "channel", "authToken"} {
			got, ok := Field(msg, key)
			want, wantOK := m[key]
			if !isObj {
				if ok {
					t.Fatalf("field %s of non-object %q", key, msg)
				}
				continue
			}
			if ok != wantOK {
				t.Fatalf("field %s of %q: found %v, encoding/json %v", key, msg, ok, wantOK)
			}
			if ok && !jsonEqual(got, want) {
				t.Fatalf("field %s of %q: %s, encoding/json %s", key, msg, got, want)
			}
		}
		// Plain agrees with String on strings without escapes.
		if body, ok := Plain(msg); ok {
			if s, _ := String(msg); s != string(body) {
				t.Fatalf("Plain(%q) = %q, String says %q", msg, body, s)
			}
		}
		// Publish reads the same two fields in one pass.
		ch, data, ok := Publish(msg)
		chv, _ := Field(msg, "channel")
		wantCh, wantOK := String(chv)
		wantData, _ := Field(msg, "data")
		if ch != wantCh || ok != wantOK || !bytes.Equal(data, wantData) {
			t.Fatalf("Publish(%q) = %q %q %v, fields say %q %q %v", msg, ch, data, ok, wantCh, wantData, wantOK)
		}
	})
}

func jsonEqual(a, b []byte) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return false
	}
	return x.String() == y.String()
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\\n\x00", "é\u2028", "\xff\xfe", strings.Repeat("x", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("AppendString(%q) = %s: %v", s, out, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("round trip %q -> %q", s, back)
		}
	})
}

func FuzzParseError(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		e := ParseError(raw)
		if e != nil {
			if b, _ := json.Marshal(e); !json.Valid(b) {
				t.Fatalf("re-dehydrated %q invalid", b)
			}
		}
	})
}
