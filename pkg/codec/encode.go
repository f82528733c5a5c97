package codec

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaped the way JSON.stringify
// escapes it (no HTML escaping); invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendEvent appends an event frame: {"event":E,"data":D,"cid":N}. A nil
// data is left out (as JSON.stringify leaves out undefined); cid 0 makes a
// transmit.
func AppendEvent(dst []byte, event string, data json.RawMessage, cid int64) []byte {
	dst = append(dst, `{"event":`...)
	dst = AppendString(dst, event)
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	if cid != 0 {
		dst = append(dst, `,"cid":`...)
		dst = strconv.AppendInt(dst, cid, 10)
	}
	return append(dst, '}')
}

// AppendPublish appends the frame that delivers a channel message to a
// subscriber: {"event":"#publish","data":{"channel":C,"data":D}}.
func AppendPublish(dst []byte, channel string, data json.RawMessage) []byte {
	dst = append(dst, `{"event":"#publish","data":{"channel":`...)
	dst = AppendString(dst, channel)
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	return append(dst, '}', '}')
}

// AppendResponse appends a success response: {"rid":R} or {"rid":R,"data":D}.
func AppendResponse(dst []byte, rid, data json.RawMessage) []byte {
	dst = append(dst, `{"rid":`...)
	dst = append(dst, rid...)
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// AppendErrorResponse appends a failure response {"rid":R,"error":E} where
// E is err dehydrated (see AppendError).
func AppendErrorResponse(dst []byte, rid json.RawMessage, err error) []byte {
	dst = append(dst, `{"rid":`...)
	dst = append(dst, rid...)
	dst = append(dst, `,"error":`...)
	dst = AppendError(dst, err)
	return append(dst, '}')
}

// AppendErrorResponseWithData appends {"rid":R,"error":E,"data":D}, the
// shape a 14.x server gives a failed #authenticate.
func AppendErrorResponseWithData(dst []byte, rid json.RawMessage, err error, data json.RawMessage) []byte {
	dst = append(dst, `{"rid":`...)
	dst = append(dst, rid...)
	dst = append(dst, `,"error":`...)
	dst = AppendError(dst, err)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// Marshal encodes v with encoding/json without HTML escaping, so strings
// come out as JSON.stringify writes them.
func Marshal(v any) (json.RawMessage, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	var b jsonBuffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := []byte(b)
	// Encoder.Encode ends with a newline.
	return out[:len(out)-1], nil
}

type jsonBuffer []byte

func (b *jsonBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
