package ws

import (
	"bytes"
	"compress/flate"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// permessage-deflate (RFC 7692). The server always answers with
// server_no_context_takeover and client_no_context_takeover: every message
// is compressed and inflated on its own, so a connection keeps no
// compression window between messages (32 KiB each way otherwise) and the
// (de)compressors are pooled across connections. Clients must accept both
// (RFC 7692 sections 7.1.1.1 and 7.1.1.2); browsers and Node's ws do.

// compressMin is the smallest payload worth compressing; shorter messages
// leave uncompressed (RSV1 clear), which the extension allows per message.
const compressMin = 128

// deflateTail is what a compressed message's sender strips from the end of
// the deflate stream and the receiver appends back (RFC 7692 section 7.2.1).
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// negotiateDeflate picks the first permessage-deflate offer in the
// request's Sec-WebSocket-Extensions that this server can honour and
// returns the response header value, or "" when there is none. The only
// parameter it cannot honour is server_max_window_bits below 15 (Go's
// compressor always uses a 32 KiB window); an offer with unknown or
// repeated parameters or bad values is declined (section 7.1).
func negotiateDeflate(h http.Header) string {
	for _, v := range h[http.CanonicalHeaderKey("Sec-WebSocket-Extensions")] {
		for offer := range strings.SplitSeq(v, ",") {
			if acceptOffer(offer) {
				return "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
			}
		}
	}
	return ""
}

// acceptOffer reports whether one extension offer is a permessage-deflate
// offer this server can accept.
func acceptOffer(offer string) bool {
	params := strings.Split(offer, ";")
	if !strings.EqualFold(strings.TrimSpace(params[0]), "permessage-deflate") {
		return false
	}
	seen := map[string]bool{}
	for _, p := range params[1:] {
		name, value, hasValue := strings.Cut(strings.TrimSpace(p), "=")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if seen[name] {
			return false
		}
		seen[name] = true
		switch name {
		case "server_no_context_takeover", "client_no_context_takeover":
			if hasValue {
				return false
			}
		case "server_max_window_bits":
			if !hasValue || value != "15" {
				return false // a smaller window than ours cannot be honoured
			}
		case "client_max_window_bits":
			if hasValue {
				if n, err := strconv.Atoi(value); err != nil || n < 8 || n > 15 || value[0] == '0' {
					return false
				}
			}
		default:
			return false
		}
	}
	return true
}

var (
	flateWriters = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}
)

// writeCompressed sends p as one compressed message (RSV1 set).
func (c *Conn) writeCompressed(op int, p []byte) error {
	bp := frameBufs.Get().(*[]byte)
	buf := bytes.NewBuffer(append((*bp)[:0], make([]byte, MaxHeader)...))
	fw := flateWriters.Get().(*flate.Writer)
	fw.Reset(buf)
	_, _ = fw.Write(p) // writes to a bytes.Buffer do not fail
	_ = fw.Flush()
	flateWriters.Put(fw)
	b := buf.Bytes()
	// Flush ends the stream with an empty stored block, 00 00 ff ff.
	b = b[:len(b)-len(deflateTail)]
	at := putHeader(b[:MaxHeader], finBit|rsv1Bit|byte(op), len(b)-MaxHeader)
	err := c.send(b[at:])
	if cap(b) <= 4*bigFrame {
		*bp = b[:0]
		frameBufs.Put(bp)
	}
	return err
}

// errInflateLimit is a compressed message that inflates past the limit.
var errInflateLimit = &CloseError{Code: CloseMessageTooBig, Reason: "message too big"}

// inflate decompresses one message, refusing (errInflateLimit) to produce
// more than limit bytes: a small message that would inflate to gigabytes
// stops here at limit+1.
func inflate(compressed []byte, limit int64) ([]byte, error) {
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	src := io.MultiReader(bytes.NewReader(compressed), bytes.NewReader(deflateTail))
	if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	out := make([]byte, 0, min(int64(len(compressed))*2+64, limit+1))
	for {
		if len(out) == cap(out) {
			if int64(len(out)) > limit {
				return nil, errInflateLimit
			}
			grow := min(int64(cap(out)), limit+1-int64(len(out)))
			out = append(out, make([]byte, grow)...)[:len(out)]
		}
		n, err := fr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if int64(len(out)) > limit {
			return nil, errInflateLimit
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			// The stream ends at the appended empty stored block; without
			// a final block flate reports the source running dry.
			return out, nil
		default:
			return nil, &CloseError{Code: CloseInvalidPayload, Reason: "bad deflate data"}
		}
	}
}
