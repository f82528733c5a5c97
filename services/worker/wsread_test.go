package worker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// frame encodes one client frame: masked unless mask is false, FIN unless
// more is true; rsv is OR-ed into the first byte.
func frame(op int, payload []byte, more, unmasked bool, rsv byte) []byte {
	b0 := byte(op) | rsv
	if !more {
		b0 |= 0x80
	}
	out := []byte{b0}
	m := byte(0x80)
	if unmasked {
		m = 0
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n < 1<<16:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if unmasked {
		return append(out, payload...)
	}
	key := [4]byte{0x12, 0x9a, 0x3c, 0xf7}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

// controls records the control frames the reader sends.
type controls struct {
	mu   sync.Mutex
	sent []string
}

func (c *controls) WriteControl(op int, data []byte, _ time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	code := ""
	if op == websocket.CloseMessage && len(data) >= 2 {
		code = "/" + itoa(int(binary.BigEndian.Uint16(data)))
	}
	c.sent = append(c.sent, map[int]string{websocket.PingMessage: "ping", websocket.PongMessage: "pong:" + string(data),
		websocket.CloseMessage: "close"}[op]+code)
	return nil
}

func (c *controls) list() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.sent, " ")
}

// readerPair returns a reader on one end of a loopback TCP connection and
// the other end, which plays the client. plain hides the socket's
// RawConn, as TLS would.
func readerPair(t *testing.T, maxPayload int64, plain bool) (*wsReader, net.Conn, *controls) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	var conn net.Conn = server
	if plain {
		conn = struct{ net.Conn }{server}
	}
	ctl := &controls{}
	rd := newWSReader(conn, ctl, maxPayload)
	if (rd.raw == nil) != plain {
		t.Fatalf("raw path: %v, want %v", rd.raw != nil, !plain)
	}
	t.Cleanup(rd.drop)
	return rd, client, ctl
}

func TestReaderMessages(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80 KB: 64-bit length, bigger than the buffer
	mid := bytes.Repeat([]byte("x"), 300)                 // 16-bit length
	for _, plain := range []bool{false, true} {
		rd, client, ctl := readerPair(t, 1<<20, plain)
		var stream []byte
		stream = append(stream, frame(websocket.TextMessage, []byte("hello"), false, false, 0)...)
		stream = append(stream, frame(websocket.TextMessage, mid, false, false, 0)...)
		// A message in three fragments with a ping between them.
		stream = append(stream, frame(websocket.TextMessage, []byte("frag-"), true, false, 0)...)
		stream = append(stream, frame(websocket.PingMessage, []byte("p1"), false, false, 0)...)
		stream = append(stream, frame(0, []byte("ment"), true, false, 0)...)
		stream = append(stream, frame(0, []byte("ed"), false, false, 0)...)
		stream = append(stream, frame(websocket.PongMessage, nil, false, false, 0)...)
		stream = append(stream, frame(websocket.BinaryMessage, big, false, false, 0)...)
		stream = append(stream, frame(websocket.TextMessage, nil, false, false, 0)...)
		stream = append(stream, frame(websocket.CloseMessage, append([]byte{0x10, 0xe1}, "bye"...), false, false, 0)...)
		go func() {
			// One byte at a time for the first part, then the rest at once.
			for _, c := range stream[:40] {
				client.Write([]byte{c})
				time.Sleep(100 * time.Microsecond)
			}
			client.Write(stream[40:])
		}()
		for _, want := range [][]byte{[]byte("hello"), mid, []byte("frag-mented"), big, {}} {
			got, err := rd.next()
			if err != nil {
				t.Fatalf("plain=%v: %v", plain, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("plain=%v: got %d bytes %.20q, want %d bytes %.20q", plain, len(got), got, len(want), want)
			}
		}
		_, err := rd.next()
		var ce *closeError
		if !errors.As(err, &ce) || ce.code != 4321 || ce.text != "bye" {
			t.Fatalf("plain=%v: close: %v", plain, err)
		}
		if got := ctl.list(); got != "pong:p1 close/4321" {
			t.Fatalf("plain=%v: control frames sent %q", plain, got)
		}
		if !plain && rd.bp != nil {
			t.Fatal("buffer held after the last message")
		}
	}
}

func TestReaderRejects(t *testing.T) {
	for _, c := range []struct {
		name  string
		input []byte
		want  string // control frames sent
		close int    // from *websocket.CloseError, or 0 for an error
	}{
		{"unmasked", frame(websocket.TextMessage, []byte("x"), false, true, 0), "close/1002", 0},
		{"reserved bits", frame(websocket.TextMessage, []byte("x"), false, false, 0x40), "close/1002", 0},
		{"unknown opcode", frame(3, []byte("x"), false, false, 0), "close/1002", 0},
		{"lone continuation", frame(0, []byte("x"), false, false, 0), "close/1002", 0},
		{"text inside fragments", append(frame(websocket.TextMessage, []byte("a"), true, false, 0),
			frame(websocket.TextMessage, []byte("b"), false, false, 0)...), "close/1002", 0},
		{"fragmented ping", frame(websocket.PingMessage, []byte("x"), true, false, 0), "close/1002", 0},
		{"long ping", frame(websocket.PingMessage, bytes.Repeat([]byte("x"), 126), false, false, 0), "close/1002", 0},
		{"too big", frame(websocket.TextMessage, bytes.Repeat([]byte("x"), 1001), false, false, 0), "close/1009", 0},
		{"too big in fragments", append(frame(websocket.TextMessage, bytes.Repeat([]byte("x"), 600), true, false, 0),
			frame(0, bytes.Repeat([]byte("x"), 600), false, false, 0)...), "close/1009", 0},
		{"huge length", []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, "close/1002", 0},
		{"one-byte close", frame(websocket.CloseMessage, []byte{3}, false, false, 0), "close/1002", 0},
		{"reserved close code", frame(websocket.CloseMessage, []byte{0x03, 0xed}, false, false, 0), "close/1002", 0},
		{"close without code", frame(websocket.CloseMessage, nil, false, false, 0), "close", CloseNoStatus},
		{"close 1000", frame(websocket.CloseMessage, []byte{0x03, 0xe8}, false, false, 0), "close/1000", 1000},
	} {
		rd, client, ctl := readerPair(t, 1000, false)
		client.Write(c.input)
		_, err := rd.next()
		var ce *closeError
		switch {
		case c.close != 0 && (!errors.As(err, &ce) || ce.code != c.close):
			t.Errorf("%s: %v, want close %d", c.name, err, c.close)
		case c.close == 0 && (err == nil || errors.As(err, &ce)):
			t.Errorf("%s: %v, want an error", c.name, err)
		}
		if got := ctl.list(); got != c.want {
			t.Errorf("%s: sent %q, want %q", c.name, got, c.want)
		}
	}
}

func TestReaderIdleHoldsNoBuffer(t *testing.T) {
	rd, client, _ := readerPair(t, 1000, false)
	got := make(chan []byte)
	go func() {
		for {
			m, err := rd.next()
			if err != nil {
				close(got)
				return
			}
			got <- m
		}
	}()
	client.Write(frame(websocket.TextMessage, []byte("one"), false, false, 0))
	if m := <-got; string(m) != "one" {
		t.Fatalf("%q", m)
	}
	time.Sleep(20 * time.Millisecond) // the reader is parked waiting for more
	client.Write(frame(websocket.TextMessage, []byte("two"), false, false, 0))
	if m := <-got; string(m) != "two" {
		t.Fatalf("%q", m)
	}
	client.Close()
	if _, ok := <-got; ok {
		t.Fatal("message after EOF")
	}
}

func TestUnmask(t *testing.T) {
	for n := 0; n < 40; n++ {
		p := bytes.Repeat([]byte{0xa5}, n)
		key := uint32(0xf73c9a12)
		unmask(key, p)
		for i, c := range p {
			if want := 0xa5 ^ byte(key>>(8*(i%4))); c != want {
				t.Fatalf("n=%d i=%d: %x want %x", n, i, c, want)
			}
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add(frame(websocket.TextMessage, []byte("hello"), false, false, 0))
	f.Add(append(frame(websocket.TextMessage, []byte("a"), true, false, 0), frame(0, []byte("b"), false, false, 0)...))
	f.Add(frame(websocket.CloseMessage, []byte{0x03, 0xe8, 'x'}, false, false, 0))
	f.Add([]byte{0x81, 0xfe, 0x01})
	f.Fuzz(func(t *testing.T, input []byte) {
		rd, client, _ := readerPair(t, 4096, false)
		client.Write(input)
		client.Close()
		total := 0
		for {
			m, err := rd.next()
			if err != nil {
				break
			}
			if total += len(m); total > len(input) {
				t.Fatalf("read %d bytes of messages from %d bytes of input", total, len(input))
			}
		}
	})
}
