package ws

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzUpgrade parses arbitrary bytes as an HTTP request and upgrades it:
// nothing panics; a request Check refuses gets an HTTP error, one it
// accepts gets 101 with the key's accept value and, when it offered
// permessage-deflate acceptably, the agreed parameters.
func FuzzUpgrade(fz *testing.F) {
	base := "GET /socketcluster/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, s := range []string{
		base + "\r\n",
		base + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
		base + "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10, permessage-deflate\r\n\r\n",
		base + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"15\"\r\n\r\n",
		strings.Replace(base, "13", "8", 1) + "\r\n",
		strings.Replace(base, "GET", "POST", 1) + "\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		fz.Add([]byte(s))
	}
	fz.Fuzz(func(t *testing.T, raw []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		server, client := socketPair(t)
		drain(client)
		w := &hijackRecorder{ResponseRecorder: httptest.NewRecorder(), nc: server}
		c, err := Upgrade(w, r, Options{Deflate: true})
		refused := Check(r)
		switch {
		case refused != nil && err == nil:
			t.Fatalf("upgraded a request Check refuses (%v)", refused)
		case refused != nil && w.Code < 400:
			t.Fatalf("refused with status %d", w.Code)
		case err == nil && c.Compressed() != (negotiateDeflate(r.Header) != ""):
			t.Fatalf("compression %v against the negotiation", c.Compressed())
		}
		if err == nil && AcceptKey(r.Header.Get("Sec-Websocket-Key")) == "" {
			t.Fatal("no accept key")
		}
	})
}

// hijackRecorder is an httptest.ResponseRecorder that can be hijacked.
type hijackRecorder struct {
	*httptest.ResponseRecorder
	nc *net.UnixConn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.nc, bufio.NewReadWriter(bufio.NewReader(h.nc), bufio.NewWriter(h.nc)), nil
}
