package worker

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0
	opText         = 1
	opBinary       = 2
	opClose        = 8
	opPing         = 9
	opPong         = 10
)

// maxHeader is the longest header of a server frame (unmasked, 64-bit
// length); buffers that carry a frame keep this much room in front.
const maxHeader = 10

// wsConn is the server side of one WebSocket connection: the upgrade, and
// frames written straight to the socket. (Reading is wsReader's.) Writes
// are serialized by a mutex: the socket's writer sends data frames, its
// reader answers pings and close frames. No write sets a deadline; the
// sweeper cuts a write that has been under way longer than WriteTimeout
// (see since).
type wsConn struct {
	nc    net.Conn
	mu    sync.Mutex
	since atomic.Int64 // unix nanos when the write under way began; 0: none
	hdr   [maxHeader]byte
}

// errUpgrade is a request that is not a WebSocket handshake.
type errUpgrade struct {
	status int
	msg    string
}

func (e *errUpgrade) Error() string { return e.msg }

var errNotWS = "websocket: the client is not using the websocket protocol: "

// upgrade answers a WebSocket handshake (RFC 6455 section 4.2) with 101
// and takes the connection over, or answers with an HTTP error. No
// extension or subprotocol is negotiated.
func upgrade(w http.ResponseWriter, r *http.Request) (*wsConn, error) {
	var e *errUpgrade
	switch {
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		e = &errUpgrade{http.StatusBadRequest, errNotWS + "'upgrade' token not found in 'Connection' header"}
	case !headerHasToken(r.Header, "Upgrade", "websocket"):
		e = &errUpgrade{http.StatusBadRequest, errNotWS + "'websocket' token not found in 'Upgrade' header"}
	case r.Method != http.MethodGet:
		e = &errUpgrade{http.StatusMethodNotAllowed, errNotWS + "request method is not GET"}
	case !headerHasToken(r.Header, "Sec-Websocket-Version", "13"):
		w.Header().Set("Sec-Websocket-Version", "13")
		e = &errUpgrade{http.StatusBadRequest, "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header"}
	}
	key := r.Header.Get("Sec-Websocket-Key")
	if e == nil && !validKey(key) {
		e = &errUpgrade{http.StatusBadRequest, "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length"}
	}
	if e != nil {
		http.Error(w, e.msg, e.status)
		return nil, e
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "websocket: "+err.Error(), http.StatusInternalServerError)
		return nil, err
	}
	if brw.Reader.Buffered() > 0 {
		nc.Close()
		return nil, errors.New("websocket: client sent data before handshake is complete")
	}
	resp := make([]byte, 0, 160)
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = append(resp, acceptKey(key)...)
	resp = append(resp, "\r\n\r\n"...)
	// The hijacked connection may carry net/http's deadlines.
	_ = nc.SetDeadline(time.Time{})
	if _, err := nc.Write(resp); err != nil {
		nc.Close()
		return nil, err
	}
	return &wsConn{nc: nc}, nil
}

// headerHasToken reports whether a comma-separated header has token,
// ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[http.CanonicalHeaderKey(name)] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func validKey(k string) bool {
	if len(k) != 24 {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) == 16
}

func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// putHeader writes the header of a final (FIN) frame with opcode op and n
// bytes of payload at the end of dst (len(dst) >= maxHeader) and returns
// where it starts.
func putHeader(dst []byte, op byte, n int) int {
	end := len(dst)
	switch {
	case n < 126:
		dst[end-2], dst[end-1] = 0x80|op, byte(n)
		return end - 2
	case n < 1<<16:
		dst[end-4], dst[end-3] = 0x80|op, 126
		binary.BigEndian.PutUint16(dst[end-2:], uint16(n))
		return end - 4
	default:
		dst[end-10], dst[end-9] = 0x80|op, 127
		binary.BigEndian.PutUint64(dst[end-8:], uint64(n))
		return end - 10
	}
}

// writeFramed sends one frame whose payload is buf[maxHeader:]; the
// header goes into the room in front, so frame and payload leave in one
// write without a copy.
func (c *wsConn) writeFramed(op byte, buf []byte) error {
	at := putHeader(buf[:maxHeader], op, len(buf)-maxHeader)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write(buf[at:])
}

// writeFrame sends one frame of payload p.
func (c *wsConn) writeFrame(op byte, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeFrameLocked(op, p)
}

// writeFrameLocked copies p behind its header into a pooled buffer and
// writes both at once; a payload too big to copy cheaply leaves with its
// header in one writev.
func (c *wsConn) writeFrameLocked(op byte, p []byte) error {
	if len(p) >= maxBatchBytes {
		at := putHeader(c.hdr[:], op, len(p))
		bufs := net.Buffers{c.hdr[at:], p}
		c.since.Store(time.Now().UnixNano())
		_, err := bufs.WriteTo(c.nc)
		c.since.Store(0)
		return err
	}
	bp := batchBufs.Get().(*[]byte)
	b := append(append((*bp)[:0], noHeader[:]...), p...)
	at := putHeader(b[:maxHeader], op, len(p))
	err := c.write(b[at:])
	*bp = b[:0]
	batchBufs.Put(bp)
	return err
}

// noHeader is the room a frame buffer starts with.
var noHeader [maxHeader]byte

func (c *wsConn) write(b []byte) error {
	c.since.Store(time.Now().UnixNano())
	_, err := c.nc.Write(b)
	c.since.Store(0)
	return err
}

// WriteControl lets the reader answer pings and close frames.
func (c *wsConn) WriteControl(op int, p []byte, _ time.Time) error {
	return c.writeControl(byte(op), p, true)
}

// writeControl sends a control frame. With wait false it gives up at
// once when another write holds the connection (a writer blocked on a
// peer that does not read): the caller is about to cut the connection
// anyway.
func (c *wsConn) writeControl(op byte, p []byte, wait bool) error {
	if len(p) > 125 {
		p = p[:125]
	}
	if wait {
		c.mu.Lock()
	} else if !c.mu.TryLock() {
		return errBusy
	}
	defer c.mu.Unlock()
	return c.writeFrameLocked(op, p)
}

var errBusy = errors.New("websocket: a write is under way")

// closePayload is the body of a close frame: the code, then the reason
// (cut so that the frame stays within 125 bytes).
func closePayload(code int, reason string) []byte {
	if code == CloseNoStatus {
		return []byte{}
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	if len(reason) > 123 {
		reason = reason[:123]
	}
	return append(b, reason...)
}
