package ws

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Options configure an upgrade.
type Options struct {
	// ReadLimit caps one inbound message in bytes (after inflating); a
	// bigger one is refused with 1009. Reader.SetLimit changes it later.
	// Default 1 MiB.
	ReadLimit int64
	// Deflate accepts permessage-deflate when the client offers it.
	// Default false.
	Deflate bool
}

// UpgradeError is a request that is not a WebSocket handshake; Upgrade has
// answered it with Status.
type UpgradeError struct {
	Status int
	Msg    string
	// wantVersion: the answer names the version this server speaks.
	wantVersion bool
}

func (e *UpgradeError) Error() string { return e.Msg }

const notWS = "websocket: the client is not using the websocket protocol: "

// Check validates a WebSocket handshake request (RFC 6455 section 4.2.1)
// without answering it.
func Check(r *http.Request) *UpgradeError {
	switch {
	case !HeaderHasToken(r.Header, "Connection", "upgrade"):
		return &UpgradeError{Status: http.StatusBadRequest, Msg: notWS + "'upgrade' token not found in 'Connection' header"}
	case !HeaderHasToken(r.Header, "Upgrade", "websocket"):
		return &UpgradeError{Status: http.StatusBadRequest, Msg: notWS + "'websocket' token not found in 'Upgrade' header"}
	case r.Method != http.MethodGet:
		return &UpgradeError{Status: http.StatusMethodNotAllowed, Msg: notWS + "request method is not GET"}
	case !HeaderHasToken(r.Header, "Sec-Websocket-Version", "13"):
		return &UpgradeError{Status: http.StatusBadRequest, Msg: "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header", wantVersion: true}
	case !validKey(r.Header.Get("Sec-Websocket-Key")):
		return &UpgradeError{Status: http.StatusBadRequest, Msg: "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length"}
	}
	return nil
}

// Upgrade answers a WebSocket handshake with 101 and takes the connection
// over, or answers with an HTTP error and returns an *UpgradeError. No
// subprotocol is negotiated; permessage-deflate is, when opts.Deflate.
func Upgrade(w http.ResponseWriter, r *http.Request, opts Options) (*Conn, error) {
	if e := Check(r); e != nil {
		if e.wantVersion {
			w.Header().Set("Sec-Websocket-Version", "13")
		}
		http.Error(w, e.Msg, e.Status)
		return nil, e
	}
	ext := ""
	if opts.Deflate {
		ext = negotiateDeflate(r.Header)
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
	resp := make([]byte, 0, 256)
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = append(resp, AcceptKey(r.Header.Get("Sec-Websocket-Key"))...)
	if ext != "" {
		resp = append(append(resp, "\r\nSec-WebSocket-Extensions: "...), ext...)
	}
	resp = append(resp, "\r\n\r\n"...)
	// The hijacked connection may carry net/http's deadlines.
	_ = nc.SetDeadline(time.Time{})
	if _, err := nc.Write(resp); err != nil {
		nc.Close()
		return nil, err
	}
	limit := opts.ReadLimit
	if limit <= 0 {
		limit = 1 << 20
	}
	return NewConn(nc, limit, ext != ""), nil
}

// HeaderHasToken reports whether a comma-separated header has token,
// ignoring case.
func HeaderHasToken(h http.Header, name, token string) bool {
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

// AcceptKey is the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
