package edge_test

// rawDial is the leanest client that still opens a SocketCluster
// connection in full: TCP connect, the WebSocket upgrade (the server's
// Sec-WebSocket-Accept checked), the #handshake event and the server's
// answer to it. The connection flood uses it besides pkg/client: on these
// two cores, shared by the worker and its clients, the client library
// (gorilla/websocket's dialer, net/http's request writer and response
// parser, a reader goroutine per client) spends about twice the worker's
// CPU per connection, and the flood would measure the clients. A raw
// connection answers no pings: it is held for seconds, not for the
// server's ping timeout.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/scc-k8s/scc/internal/ws"
	"github.com/scc-k8s/scc/pkg/codec"
)

// rawConn is an open, handshaken connection; its reads go through br,
// which may hold bytes already read.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func rawDial(ctx context.Context, d *net.Dialer, wsURL string) (*rawConn, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	rc := &rawConn{Conn: c, br: bufio.NewReaderSize(c, 1024)}
	if err := rc.open(u); err != nil {
		c.Close()
		return nil, fmt.Errorf("raw dial %s: %w", wsURL, err)
	}
	_ = c.SetDeadline(time.Time{})
	return rc, nil
}

func (c *rawConn) open(u *url.URL) error {
	// Nonce and mask from math/rand: unpredictable enough for a test on
	// loopback, without a getrandom call each.
	var nonce [16]byte
	binary.LittleEndian.PutUint64(nonce[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(nonce[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c.Conn, req); err != nil {
		return err
	}
	status, err := c.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(status), "HTTP/1.1 101 ") {
		return fmt.Errorf("upgrade answered %q", strings.TrimSpace(string(status)))
	}
	want, accepted := ws.AcceptKey(key), false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		h := strings.TrimSpace(string(line))
		if h == "" {
			break
		}
		name, value, _ := strings.Cut(h, ":")
		if strings.EqualFold(name, "Sec-WebSocket-Accept") && strings.TrimSpace(value) == want {
			accepted = true
		}
	}
	if !accepted {
		return errors.New("no valid Sec-WebSocket-Accept")
	}
	if _, err := c.Conn.Write(maskedText(codec.AppendEvent(nil, "#handshake", []byte(`{"authToken":null}`), 1))); err != nil {
		return err
	}
	msg, err := c.readText()
	if err != nil {
		return err
	}
	frames, _, _ := codec.Decode(msg, nil)
	for i := range frames {
		if rid, ok := codec.Int(frames[i].RID); ok && rid == 1 {
			if e := codec.ParseError(frames[i].Error); e != nil {
				return fmt.Errorf("handshake refused: %v", e)
			}
			return nil
		}
	}
	return fmt.Errorf("no answer to the handshake in %q", msg)
}

// maskedText frames b as one masked text message (clients mask).
func maskedText(b []byte) []byte {
	f := []byte{0x81}
	switch {
	case len(b) < 126:
		f = append(f, 0x80|byte(len(b)))
	case len(b) < 1<<16:
		f = append(f, 0x80|126, byte(len(b)>>8), byte(len(b)))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(len(b)))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	f = append(f, mask[:]...)
	for i, x := range b {
		f = append(f, x^mask[i%4])
	}
	return f
}

// readText reads one unfragmented, unmasked text frame of at most 64 KiB
// (the handshake's answer).
func (c *rawConn) readText() ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return nil, err
	}
	if h[0] != 0x81 || h[1]&0x80 != 0 {
		return nil, fmt.Errorf("frame header %#x %#x: want one unmasked text frame", h[0], h[1])
	}
	n := int(h[1])
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return nil, err
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	case 127:
		return nil, errors.New("a handshake answer over 64 KiB")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(c.br, b)
	return b, err
}
