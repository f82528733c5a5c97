package ws

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The conformance table: cases written from RFC 6455 (and RFC 7692 for
// compression) and from the public descriptions of the Autobahn
// testsuite's server cases (the section numbers in the names), run against
// an echo server on this package. Each case sends its frames, then a close
// frame (1000), and lists exactly what the server answers: echoed
// messages, pongs, its close frame. A case that fails the connection ends
// with the server's close code; the client's trailing close then goes
// unanswered.
//
// Where the RFC allows two outcomes, the comment says which we chose.

const limit = 1 << 16 // the echo server's read limit

type confCase struct {
	name   string
	frames []fr
	want   []string
	// chunked sends the frames' bytes one at a time.
	chunked bool
	// noClose leaves out the trailing close: the case expects the server
	// to act on the frames before the rest of a message could arrive.
	noClose bool
}

func rep(s string, n int) string { return strings.Repeat(s, n) }

var confCases = []confCase{
	// 1: framing of text and binary messages at the length boundaries.
	{name: "1.1.1 empty text", frames: []fr{f(OpText, "")}, want: []string{"text:", "close:1000"}},
	{name: "1.1.2 text 125", frames: []fr{f(OpText, rep("*", 125))}, want: []string{"text:125B", "close:1000"}},
	{name: "1.1.3 text 126", frames: []fr{f(OpText, rep("*", 126))}, want: []string{"text:126B", "close:1000"}},
	{name: "1.1.4 text 127", frames: []fr{f(OpText, rep("*", 127))}, want: []string{"text:127B", "close:1000"}},
	{name: "1.1.5 text 128", frames: []fr{f(OpText, rep("*", 128))}, want: []string{"text:128B", "close:1000"}},
	{name: "1.1.6 text 65535", frames: []fr{f(OpText, rep("*", 65535))}, want: []string{"text:65535B", "close:1000"}},
	{name: "1.1.7 text 65536", frames: []fr{f(OpText, rep("*", 65536))}, want: []string{"text:65536B", "close:1000"}},
	{name: "1.1.8 text 65536 in 997-byte chunks", frames: []fr{f(OpText, rep("*", 65536))}, chunked: true, want: []string{"text:65536B", "close:1000"}},
	{name: "1.2.1 empty binary", frames: []fr{f(OpBinary, "")}, want: []string{"binary:0", "close:1000"}},
	{name: "1.2.4 binary 127", frames: []fr{f(OpBinary, rep("\xfe", 127))}, want: []string{"binary:127", "close:1000"}},
	{name: "1.2.7 binary 65536", frames: []fr{f(OpBinary, rep("\xfe", 65536))}, want: []string{"binary:65536", "close:1000"}},

	// 2: ping and pong.
	{name: "2.1 ping without payload", frames: []fr{f(OpPing, "")}, want: []string{"pong:", "close:1000"}},
	{name: "2.2 ping with text", frames: []fr{f(OpPing, "Hello, world!")}, want: []string{"pong:Hello, world!", "close:1000"}},
	{name: "2.3 ping with binary", frames: []fr{f(OpPing, "\x00\xff\xfe\xfd\xfc\xfb\x00\xff")}, want: []string{"pong:\x00\xff\xfe\xfd\xfc\xfb\x00\xff", "close:1000"}},
	{name: "2.4 ping 125", frames: []fr{f(OpPing, rep("\xfe", 125))}, want: []string{"pong:125B", "close:1000"}},
	{name: "2.5 ping 126 fails", frames: []fr{f(OpPing, rep("\xfe", 126))}, want: []string{"close:1002"}},
	{name: "2.6 ping 125 byte by byte", frames: []fr{f(OpPing, rep("\xfe", 125))}, chunked: true, want: []string{"pong:125B", "close:1000"}},
	{name: "2.7 unsolicited pong", frames: []fr{f(OpPong, "")}, want: []string{"close:1000"}},
	{name: "2.8 unsolicited pong with payload", frames: []fr{f(OpPong, "unsolicited")}, want: []string{"close:1000"}},
	{name: "2.9 pong then ping", frames: []fr{f(OpPong, "x"), f(OpPing, "y")}, want: []string{"pong:y", "close:1000"}},
	{name: "2.10 ten pings", frames: slices.Repeat([]fr{f(OpPing, "p")}, 10), want: append(slices.Repeat([]string{"pong:p"}, 10), "close:1000")},

	// 3: reserved bits (no extension negotiated).
	{name: "3.1 RSV1 on text", frames: []fr{f(OpText, "x").rsvs(0x40)}, want: []string{"close:1002"}},
	{name: "3.2 RSV2 after a valid text", frames: []fr{f(OpText, "ok"), f(OpText, "x").rsvs(0x20), f(OpPing, "")}, want: []string{"text:ok", "close:1002"}},
	{name: "3.3 RSV3 on text", frames: []fr{f(OpText, "x").rsvs(0x10)}, want: []string{"close:1002"}},
	{name: "3.6 RSV2+RSV3 on ping", frames: []fr{f(OpPing, "x").rsvs(0x30)}, want: []string{"close:1002"}},
	{name: "3.7 all reserved bits on close", frames: []fr{closeFrame(1000, "").rsvs(0x70)}, want: []string{"close:1002"}},

	// 4: opcodes.
	{name: "4.1.1 opcode 3", frames: []fr{f(3, "")}, want: []string{"close:1002"}},
	{name: "4.1.3 text, opcode 5, ping", frames: []fr{f(OpText, "a"), f(5, ""), f(OpPing, "")}, want: []string{"text:a", "close:1002"}},
	{name: "4.1.5 opcode 7 with payload", frames: []fr{f(7, "reserved")}, want: []string{"close:1002"}},
	{name: "4.2.1 opcode 11", frames: []fr{f(11, "")}, want: []string{"close:1002"}},
	{name: "4.2.5 opcode 15 with payload", frames: []fr{f(15, "x")}, want: []string{"close:1002"}},

	// 5: fragmentation.
	{name: "5.1 fragmented ping", frames: []fr{f(OpPing, "a").cont(), f(OpContinuation, "b")}, want: []string{"close:1002"}},
	{name: "5.2 fragmented pong", frames: []fr{f(OpPong, "a").cont(), f(OpContinuation, "b")}, want: []string{"close:1002"}},
	{name: "5.3 text in two fragments", frames: []fr{f(OpText, "frag").cont(), f(OpContinuation, "ment")}, want: []string{"text:fragment", "close:1000"}},
	{name: "5.5 text in two fragments, byte by byte", frames: []fr{f(OpText, "frag").cont(), f(OpContinuation, "ment")}, chunked: true, want: []string{"text:fragment", "close:1000"}},
	{name: "5.6 ping between fragments", frames: []fr{f(OpText, "frag").cont(), f(OpPing, "p"), f(OpContinuation, "ment")}, want: []string{"pong:p", "text:fragment", "close:1000"}},
	{name: "5.9 continuation without a message", frames: []fr{f(OpContinuation, "x"), f(OpText, "y")}, want: []string{"close:1002"}},
	{name: "5.10 final continuation without a message", frames: []fr{f(OpContinuation, "x").cont(), f(OpContinuation, "y")}, want: []string{"close:1002"}},
	{name: "5.15 text inside a fragmented text", frames: []fr{f(OpText, "a").cont(), f(OpContinuation, "b").cont(), f(OpText, "c"), f(OpContinuation, "d")}, want: []string{"close:1002"}},
	{name: "5.18 two text starts", frames: []fr{f(OpText, "a").cont(), f(OpText, "b")}, want: []string{"close:1002"}},
	{name: "5.19 pings between five fragments", frames: []fr{
		f(OpText, "1").cont(), f(OpContinuation, "2").cont(), f(OpPing, "a"), f(OpContinuation, "3").cont(),
		f(OpContinuation, "4").cont(), f(OpPing, "b"), f(OpContinuation, "5")},
		want: []string{"pong:a", "pong:b", "text:12345", "close:1000"}},
	{name: "binary in fragments", frames: []fr{f(OpBinary, "\xff").cont(), f(OpContinuation, "\xfe")}, want: []string{"binary:2", "close:1000"}},

	// 6: UTF-8 in text messages.
	{name: "6.2.1 valid UTF-8", frames: []fr{f(OpText, "Hello-µ@ßöäüàá-UTF-8!!")}, want: []string{"text:Hello-µ@ßöäüàá-UTF-8!!", "close:1000"}},
	{name: "6.2.3 valid UTF-8 byte by byte", frames: []fr{f(OpText, "κόσμε")}, chunked: true, want: []string{"text:κόσμε", "close:1000"}},
	{name: "6.2.4 a character split between fragments", frames: []fr{f(OpText, "\xce\xba\xe1").cont(), f(OpContinuation, "\xbd\xb9\xcf\x83")}, want: []string{"text:κόσ", "close:1000"}},
	{name: "6.3.1 invalid UTF-8", frames: []fr{f(OpText, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")}, want: []string{"close:1007"}},
	{name: "6.3.2 invalid UTF-8 split across fragments", frames: []fr{f(OpText, "\xce\xba\xe1\xbd").cont(), f(OpContinuation, "\xb9\xed\xa0").cont(), f(OpContinuation, "\x80x")}, want: []string{"close:1007"}},
	{name: "6.4.1 fail fast on the first fragment", frames: []fr{f(OpText, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80").cont()}, noClose: true, want: []string{"close:1007"}},
	{name: "6.4.2 fail fast inside a frame", frames: []fr{{op: OpText, payload: []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4"), length: 30}}, noClose: true, want: []string{"TIMEOUT"}}, // \xf4 alone may still become valid
	{name: "6.4.3 fail fast inside a frame, invalid now", frames: []fr{{op: OpText, payload: []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90"), length: 30}}, noClose: true, want: []string{"close:1007"}},
	{name: "6.6 truncated at the end of a message", frames: []fr{f(OpText, "\xce\xba\xe1\xbd")}, want: []string{"close:1007"}},
	{name: "6.7 lone continuation byte", frames: []fr{f(OpText, "\x80")}, want: []string{"close:1007"}},
	{name: "6.8 overlong slash", frames: []fr{f(OpText, "\xc0\xaf")}, want: []string{"close:1007"}},
	{name: "6.9 overlong in four bytes", frames: []fr{f(OpText, "\xf0\x80\x80\xaf")}, want: []string{"close:1007"}},
	{name: "6.10 surrogate", frames: []fr{f(OpText, "\xed\xa0\x80")}, want: []string{"close:1007"}},
	{name: "6.11 above U+10FFFF", frames: []fr{f(OpText, "\xf4\x90\x80\x80")}, want: []string{"close:1007"}},
	{name: "6.12 the bytes FE and FF", frames: []fr{f(OpText, "\xfe\xff")}, want: []string{"close:1007"}},
	{name: "6.13 U+FFFD itself is valid", frames: []fr{f(OpText, "\xef\xbf\xbd")}, want: []string{"text:\ufffd", "close:1000"}},
	{name: "6.14 highest code point", frames: []fr{f(OpText, "\xf4\x8f\xbf\xbf")}, want: []string{"text:\U0010ffff", "close:1000"}},
	// Binary messages are not text: anything goes.
	{name: "binary is not checked", frames: []fr{f(OpBinary, "\xfe\xff")}, want: []string{"binary:2", "close:1000"}},

	// 7: the close handshake.
	{name: "7.1.1 text then close", frames: []fr{f(OpText, "hi")}, want: []string{"text:hi", "close:1000"}},
	{name: "7.1.2 two closes get one answer", frames: []fr{closeFrame(1000, "")}, want: []string{"close:1000"}},
	// Chosen: nothing after the peer's close is answered (the RFC allows
	// either; we are already closing).
	{name: "7.1.3 ping after close", frames: []fr{closeFrame(1000, ""), f(OpPing, "late")}, want: []string{"close:1000"}},
	{name: "7.1.4 text after close", frames: []fr{closeFrame(1000, ""), f(OpText, "late")}, want: []string{"close:1000"}},
	{name: "7.1.5 close inside a fragmented text", frames: []fr{f(OpText, "a").cont(), closeFrame(1000, ""), f(OpContinuation, "b")}, want: []string{"close:1000"}},
	{name: "7.3.1 close without payload is answered without payload", frames: []fr{f(OpClose, "")}, want: []string{"close:"}},
	{name: "7.3.2 close of one byte", frames: []fr{f(OpClose, "\x03")}, want: []string{"close:1002"}},
	{name: "7.3.4 close 1000 with a reason", frames: []fr{closeFrame(1000, "Hello World!")}, want: []string{"close:1000"}},
	{name: "7.3.5 close with a 123-byte reason", frames: []fr{closeFrame(1000, rep("*", 123))}, want: []string{"close:1000"}},
	{name: "7.3.6 close with a 124-byte reason", frames: []fr{closeFrame(1000, rep("*", 124))}, want: []string{"close:1002"}},
	{name: "7.5.1 close reason not UTF-8", frames: []fr{closeFrame(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")}, want: []string{"close:1007"}},
	{name: "7.7.1 close 1000", frames: []fr{closeFrame(1000, "")}, want: []string{"close:1000"}},
	{name: "7.7.2 close 1001", frames: []fr{closeFrame(1001, "")}, want: []string{"close:1001"}},
	{name: "7.7.3 close 1002", frames: []fr{closeFrame(1002, "")}, want: []string{"close:1002"}},
	{name: "7.7.4 close 1003", frames: []fr{closeFrame(1003, "")}, want: []string{"close:1003"}},
	{name: "7.7.5 close 1007", frames: []fr{closeFrame(1007, "")}, want: []string{"close:1007"}},
	{name: "7.7.8 close 1010", frames: []fr{closeFrame(1010, "")}, want: []string{"close:1010"}},
	{name: "7.7.9 close 1011", frames: []fr{closeFrame(1011, "")}, want: []string{"close:1011"}},
	// Chosen: 1012-1014 are registered since the Autobahn table was
	// written; like Node's ws and gorilla we accept them.
	{name: "close 1012", frames: []fr{closeFrame(1012, "")}, want: []string{"close:1012"}},
	{name: "close 1014", frames: []fr{closeFrame(1014, "")}, want: []string{"close:1014"}},
	{name: "7.7.10 close 3000", frames: []fr{closeFrame(3000, "")}, want: []string{"close:3000"}},
	{name: "7.7.11 close 3999", frames: []fr{closeFrame(3999, "")}, want: []string{"close:3999"}},
	{name: "7.7.12 close 4000", frames: []fr{closeFrame(4000, "")}, want: []string{"close:4000"}},
	{name: "7.7.13 close 4999", frames: []fr{closeFrame(4999, "")}, want: []string{"close:4999"}},
	{name: "7.9.1 close 0", frames: []fr{closeFrame(0, "")}, want: []string{"close:1002"}},
	{name: "7.9.2 close 999", frames: []fr{closeFrame(999, "")}, want: []string{"close:1002"}},
	{name: "7.9.3 close 1004", frames: []fr{closeFrame(1004, "")}, want: []string{"close:1002"}},
	{name: "7.9.4 close 1005", frames: []fr{closeFrame(1005, "")}, want: []string{"close:1002"}},
	{name: "7.9.5 close 1006", frames: []fr{closeFrame(1006, "")}, want: []string{"close:1002"}},
	{name: "7.9.9 close 1015", frames: []fr{closeFrame(1015, "")}, want: []string{"close:1002"}},
	{name: "7.9.10 close 1016", frames: []fr{closeFrame(1016, "")}, want: []string{"close:1002"}},
	{name: "7.9.11 close 1100", frames: []fr{closeFrame(1100, "")}, want: []string{"close:1002"}},
	{name: "7.9.12 close 2000", frames: []fr{closeFrame(2000, "")}, want: []string{"close:1002"}},
	{name: "7.9.13 close 2999", frames: []fr{closeFrame(2999, "")}, want: []string{"close:1002"}},
	{name: "7.13.1 close 5000", frames: []fr{closeFrame(5000, "")}, want: []string{"close:1002"}},
	{name: "7.13.2 close 65535", frames: []fr{closeFrame(65535, "")}, want: []string{"close:1002"}},

	// 9 and the hostile inputs: lengths and limits.
	{name: "unmasked client frame", frames: []fr{{op: OpText, payload: []byte("x"), unmask: true, length: -1}}, want: []string{"close:1002"}},
	{name: "message at the limit", frames: []fr{f(OpBinary, rep("x", limit))}, want: []string{"binary:65536", "close:1000"}},
	{name: "message one byte over the limit", frames: []fr{f(OpBinary, rep("x", limit+1))}, want: []string{"close:1009"}},
	{name: "fragments adding up to over the limit", frames: []fr{f(OpText, rep("x", limit/2)).cont(), f(OpContinuation, rep("x", limit/2)).cont(), f(OpContinuation, "x")}, want: []string{"close:1009"}},
	{name: "declared size far above the limit, nothing sent", frames: []fr{{op: OpText, length: 1 << 40}}, noClose: true, want: []string{"close:1009"}},
	{name: "64-bit length with the high bit set", frames: []fr{{op: OpText, length: -1 << 63}}, noClose: true, want: []string{"close:1002"}},
	{name: "64-bit length 2^63-1 on a continuation (overflowing sum)", frames: []fr{f(OpText, "a").cont(), {op: OpContinuation, length: 1<<63 - 1}}, noClose: true, want: []string{"close:1009"}},
	{name: "64-bit length 2^63-1 on a first frame", frames: []fr{{op: OpBinary, length: 1<<63 - 1}}, noClose: true, want: []string{"close:1009"}},
	{name: "64-bit length of a small payload", frames: []fr{{op: OpText, payload: []byte("tiny"), length: 4}}, want: []string{"text:tiny", "close:1000"}},
	{name: "declared size within the limit, only part sent", frames: []fr{{op: OpText, payload: []byte("abc"), length: 60000}}, noClose: true, want: []string{"TIMEOUT"}},
}

func TestConformance(t *testing.T) {
	srv := startEcho(t, Options{ReadLimit: limit})
	for _, c := range confCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runCase(t, srv.URL, "", c)
		})
	}
}

func runCase(t *testing.T, url, extra string, c confCase) {
	nc, br, _ := dial(t, url, extra)
	var stream []byte
	for _, x := range c.frames {
		stream = append(stream, x.encode()...) // a header may declare more than follows
	}
	if !c.noClose {
		stream = append(stream, closeFrame(1000, "").encode()...)
	}
	go func() {
		if c.chunked {
			for i := 0; i < len(stream); {
				n := min(997, len(stream)-i)
				if len(stream) < 2000 {
					n = 1
				}
				if _, err := nc.Write(stream[i : i+n]); err != nil {
					return
				}
				i += n
			}
			return
		}
		_, _ = nc.Write(stream)
	}()
	wait := 5 * time.Second
	if c.noClose {
		wait = 700 * time.Millisecond
	}
	got := readAll(nc, br, wait)
	if !slices.Equal(got, c.want) {
		t.Errorf("got %q, want %q", got, c.want)
	}
}

// The same table's essentials over a compressed connection, and what only
// compression has.
func TestConformanceDeflate(t *testing.T) {
	srv := startEcho(t, Options{ReadLimit: limit, Deflate: true})
	ext := "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	big := rep("compressible ", 100)
	bomb := deflated(rep("\x00", 10<<20))
	cases := []confCase{
		{name: "12.1 compressed text", frames: []fr{{op: OpText, rsv: 0x40, payload: deflated("Hello"), length: -1}}, want: []string{"text:Hello", "close:1000"}},
		{name: "compressed text echoed compressed", frames: []fr{{op: OpText, rsv: 0x40, payload: deflated(big), length: -1}}, want: []string{"text+z:1300B", "close:1000"}},
		{name: "uncompressed text on a compressed connection", frames: []fr{f(OpText, "plain")}, want: []string{"text:plain", "close:1000"}},
		{name: "compressed message in fragments", frames: func() []fr {
			d := deflated(big)
			return []fr{{op: OpText, rsv: 0x40, payload: d[:10], more: true, length: -1}, {op: OpContinuation, payload: d[10:], length: -1}}
		}(), want: []string{"text+z:1300B", "close:1000"}},
		{name: "RSV1 on a continuation", frames: []fr{f(OpText, "a").cont(), f(OpContinuation, "b").rsvs(0x40)}, want: []string{"close:1002"}},
		{name: "RSV1 on a ping", frames: []fr{f(OpPing, "a").rsvs(0x40)}, want: []string{"close:1002"}},
		{name: "RSV2 still refused", frames: []fr{f(OpText, "a").rsvs(0x20)}, want: []string{"close:1002"}},
		{name: "deflate bomb", frames: []fr{{op: OpBinary, rsv: 0x40, payload: bomb, length: -1}}, want: []string{"close:1009"}},
		{name: "compressed invalid UTF-8", frames: []fr{{op: OpText, rsv: 0x40, payload: deflated("\xfe\xff"), length: -1}}, want: []string{"close:1007"}},
		{name: "bad deflate data", frames: []fr{{op: OpText, rsv: 0x40, payload: []byte{0xff, 0xff, 0xff}, length: -1}}, want: []string{"close:1007"}},
		{name: "empty compressed message", frames: []fr{{op: OpText, rsv: 0x40, payload: []byte{0x00}, length: -1}}, want: []string{"text:", "close:1000"}},
	}
	if len(bomb) > limit {
		t.Fatalf("the bomb (%d bytes) should fit the limit compressed", len(bomb))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runCase(t, srv.URL, ext, c)
		})
	}
}

func TestDeflateNegotiation(t *testing.T) {
	on := startEcho(t, Options{Deflate: true})
	off := startEcho(t, Options{})
	const agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	for _, c := range []struct {
		url, offer, want string
	}{
		{on.URL, "", ""},
		{on.URL, "permessage-deflate", agreed},
		{on.URL, "permessage-deflate; client_max_window_bits", agreed}, // browsers
		{on.URL, "permessage-deflate; client_max_window_bits=10; server_no_context_takeover", agreed},
		{on.URL, "permessage-deflate; server_max_window_bits=10", ""},                         // cannot honour
		{on.URL, "permessage-deflate; server_max_window_bits=10, permessage-deflate", agreed}, // the second offer
		{on.URL, "permessage-deflate; client_max_window_bits=16", ""},
		{on.URL, "permessage-deflate; client_max_window_bits=08", ""},
		{on.URL, "permessage-deflate; unknown_param", ""},
		{on.URL, "permessage-deflate; server_no_context_takeover; server_no_context_takeover", ""},
		{on.URL, "permessage-deflate; server_no_context_takeover=1", ""},
		{on.URL, "x-webkit-deflate-frame", ""},
		{off.URL, "permessage-deflate", ""},
	} {
		extra := ""
		if c.offer != "" {
			extra = "Sec-WebSocket-Extensions: " + c.offer + "\r\n"
		}
		_, _, resp := dial(t, c.url, extra)
		if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != c.want {
			t.Errorf("offer %q: answered %q, want %q", c.offer, got, c.want)
		}
	}
}

// A compressed connection's outbound messages inflate back to what was
// written, large and small, many in a row (no context is carried over).
func TestDeflateWrites(t *testing.T) {
	srv := startEcho(t, Options{Deflate: true, ReadLimit: 1 << 20})
	nc, br, _ := dial(t, srv.URL, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
	var stream []byte
	var want []string
	for i := range 20 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 50*i*i)
		stream = append(stream, fr{op: OpText, rsv: 0x40, payload: deflated(string(msg)), length: -1}.encode()...)
		kind := "text"
		if len(msg) >= compressMin {
			kind = "text+z"
		}
		if len(msg) > 40 {
			want = append(want, kind+":"+strconv.Itoa(len(msg))+"B")
		} else {
			want = append(want, kind+":"+string(msg))
		}
	}
	stream = append(stream, closeFrame(1000, "").encode()...)
	go nc.Write(stream)
	got := readAll(nc, br, 5*time.Second)
	want = append(want, "close:1000")
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
