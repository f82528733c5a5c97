package ws

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

// fr describes one client frame for the tests.
type fr struct {
	op      int
	payload []byte
	more    bool  // FIN clear
	rsv     byte  // OR-ed into the first byte (0x40, 0x20, 0x10)
	unmask  bool  // send unmasked
	length  int64 // declared length; -1: len(payload); below -1: that value as a raw 64-bit length
}

func f(op int, payload string) fr { return fr{op: op, payload: []byte(payload), length: -1} }

func (x fr) cont() fr       { x.more = true; return x }
func (x fr) rsvs(b byte) fr { x.rsv = b; return x }

// encode a client frame: masked, with the declared length (which may lie).
func (x fr) encode() []byte {
	b0 := byte(x.op) | x.rsv
	if !x.more {
		b0 |= 0x80
	}
	n := uint64(x.length)
	if x.length == -1 {
		n = uint64(len(x.payload))
	}
	return testutil.WSFrame(b0, x.payload, n, x.unmask)
}

func closeFrame(code int, reason string) fr {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return fr{op: OpClose, payload: append(p, reason...), length: -1}
}

func deflated(s string) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write([]byte(s))
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), deflateTail)
}

// echoServer serves ws.Upgrade on a loopback port and echoes every
// message; a read error ends the connection. serverErr receives what
// ended each connection.
type echoServer struct {
	*httptest.Server
	errs chan error
}

func startEcho(t testing.TB, opts Options) *echoServer {
	t.Helper()
	e := &echoServer{errs: make(chan error, 100)}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(w, r, opts)
		if err != nil {
			return
		}
		defer c.Close()
		defer c.Reader().Drop()
		for {
			op, msg, err := c.Reader().Next()
			if err != nil {
				var ce *CloseError
				if errors.As(err, &ce) && !ce.Remote {
					// We failed the connection: give the client a moment to
					// read our close frame before the TCP close.
					_ = c.NetConn().SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					io.Copy(io.Discard, c.NetConn())
				}
				select {
				case e.errs <- err:
				default:
				}
				return
			}
			if err := c.WriteMessage(op, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(e.Close)
	return e
}

// dial opens a raw client connection and completes the handshake with
// the given extra headers; it returns the connection and the response.
func dial(t testing.TB, url string, extra string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	addr := strings.TrimPrefix(url, "http://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra + "\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("handshake: %s", resp.Status)
	}
	return nc, br, resp
}

// readAll reads server frames until EOF (or timeout) and describes each:
// "text:<payload>", "binary:<len>", "pong:<payload>", "close:<code>"
// ("close:" for an empty close frame), with "+z" after the kind of a
// compressed frame. A frame that breaks the RFC on the server's side is
// reported as "BAD:...".
func readAll(nc net.Conn, br *bufio.Reader, timeout time.Duration) []string {
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	var out []string
	for {
		b0, p, err := testutil.ReadWSFrame(br)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				out = append(out, "TIMEOUT")
			} else if err != io.EOF && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				out = append(out, "BAD:"+err.Error())
			}
			return out
		}
		kind := map[int]string{OpText: "text", OpBinary: "binary", OpClose: "close", OpPing: "ping", OpPong: "pong"}[int(b0&0x0f)]
		if b0&0x80 == 0 {
			return append(out, "BAD:fragmented server frame")
		}
		if b0&0x40 != 0 {
			r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail)))
			q, err := io.ReadAll(r)
			if err != nil && err != io.ErrUnexpectedEOF {
				return append(out, "BAD:deflate "+err.Error())
			}
			p, kind = q, kind+"+z"
		}
		switch kind {
		case "close":
			if len(p) >= 2 {
				out = append(out, "close:"+strconv.Itoa(int(binary.BigEndian.Uint16(p))))
			} else {
				out = append(out, "close:")
			}
		case "binary", "binary+z":
			out = append(out, kind+":"+strconv.Itoa(len(p)))
		default:
			if len(p) > 40 {
				out = append(out, kind+":"+strconv.Itoa(len(p))+"B")
			} else {
				out = append(out, kind+":"+string(p))
			}
		}
	}
}
