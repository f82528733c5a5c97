// Package ws is the server side of the WebSocket protocol (RFC 6455) with
// permessage-deflate (RFC 7692): the upgrade, a frame reader, a frame
// writer and the close handshake. It knows nothing of SocketCluster; the
// worker builds its sockets on it, the conformance table and the fuzzers
// target it alone.
//
// Everything a client sends is treated as hostile: lengths are checked
// without overflow, a message buffer grows only as its bytes arrive (never
// to the size a header merely declares), text is validated as UTF-8 as it
// arrives, across fragments, and a deflated message is inflated only up to
// the read limit.
//
// Concurrency: a Conn has one reader (the goroutine calling Reader.Next)
// and any number of writers; writes are serialized by the Conn's mutex,
// which is never held while waiting for anything but the socket.
package ws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Opcodes (RFC 6455 section 5.2).
const (
	OpContinuation = 0
	OpText         = 1
	OpBinary       = 2
	OpClose        = 8
	OpPing         = 9
	OpPong         = 10
)

// Close codes (RFC 6455 section 7.4.1 and the IANA registry).
const (
	CloseNormal             = 1000
	CloseGoingAway          = 1001
	CloseProtocolError      = 1002
	CloseUnsupportedData    = 1003
	CloseNoStatus           = 1005 // never on the wire: a close frame without a code
	CloseAbnormal           = 1006 // never on the wire: the connection ended without a close frame
	CloseInvalidPayload     = 1007
	ClosePolicyViolation    = 1008
	CloseMessageTooBig      = 1009
	CloseMandatoryExtension = 1010
	CloseInternalError      = 1011
	CloseServiceRestart     = 1012
	CloseTryAgainLater      = 1013
	CloseBadGateway         = 1014
	CloseTLSHandshake       = 1015 // never on the wire
)

// MaxReason is the longest close reason that fits a control frame (125
// bytes) after the two-byte code.
const MaxReason = 123

// ValidCloseCode reports whether code may appear in a close frame, sent or
// received: the registered codes 1000-1003 and 1007-1014, and 3000-4999
// (libraries and applications). 1004 is reserved; 1005, 1006 and 1015 only
// ever describe a close locally. This is the rule of Node's ws, which
// socketcluster-server runs on, and of gorilla/websocket.
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}

// ErrCloseCode is a close code that may not be sent (see ValidCloseCode).
var ErrCloseCode = errors.New("ws: close code may not be sent in a close frame")

// CheckCloseCode returns an error wrapping ErrCloseCode when code may not
// be sent.
func CheckCloseCode(code int) error {
	if !ValidCloseCode(code) {
		return fmt.Errorf("%w: %d", ErrCloseCode, code)
	}
	return nil
}

// CutReason makes reason fit a close frame: invalid UTF-8 is replaced and
// the text is cut at a character boundary within MaxReason bytes.
func CutReason(reason string) string {
	if !utf8.ValidString(reason) {
		reason = string([]rune(reason)) // each invalid byte becomes U+FFFD
	}
	if len(reason) <= MaxReason {
		return reason
	}
	n := MaxReason
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}

// closeBody is a close frame's payload. CloseNoStatus gives an empty one
// (the only way that code is expressed on the wire); the caller has
// checked any other code.
func closeBody(code int, reason string) []byte {
	if code == CloseNoStatus {
		return []byte{}
	}
	reason = CutReason(reason)
	b := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(b, uint16(code))
	return append(b, reason...)
}

// CloseError ends reading: the peer's close frame (Remote), or the close
// frame this side sent because the peer broke the protocol (1002), sent
// invalid UTF-8 (1007), a message over the read limit (1009), or a frame
// that needs an extension not negotiated.
type CloseError struct {
	Code   int
	Reason string
	Remote bool
}

func (e *CloseError) Error() string {
	who := "we closed"
	if e.Remote {
		who = "the client closed"
	}
	return "ws: " + who + ": " + strconv.Itoa(e.Code) + " " + e.Reason
}

// ErrYield is what Reader.Next returns, once, after Reader.Yield when it
// would otherwise wait for the client.
var ErrYield = errors.New("ws: reader hands over")

// ErrCloseSent is a write after this side's close frame.
var ErrCloseSent = errors.New("ws: close frame already sent")

// ErrBusy is a non-waiting write that found another write under way.
var ErrBusy = errors.New("ws: a write is under way")
