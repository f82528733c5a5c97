// Package codec is the SocketCluster wire format (what sc-formatter does in
// JavaScript), with no I/O: deciding whether a WebSocket message is a frame,
// a batch of frames or a raw message; reading the fields of a frame; and
// appending encoded frames, responses and dehydrated errors to a buffer.
//
// Payloads stay json.RawMessage throughout: the server passes client data
// through byte for byte and never re-encodes it.
package codec

import (
	"encoding/json"
	"unicode/utf8"
)

// Frame is one SocketCluster packet. Which fields are set tells its kind:
//   - HasEvent and CID != nil: an invoke (RPC) expecting a response with rid = cid;
//   - HasEvent and CID == nil: a transmit;
//   - RID != nil: a response to an earlier invoke;
//   - none of these: not a packet, the message is raw.
type Frame struct {
	// Event is the event name; valid when HasEvent.
	Event    string
	HasEvent bool
	// CID is the raw JSON number of "cid", nil unless "cid" is a number.
	CID json.RawMessage
	// RID is the raw JSON number of "rid", nil unless "rid" is a number.
	RID json.RawMessage
	// Data is the raw "data" value, nil when the member is absent.
	Data json.RawMessage
	// Error is the raw "error" value of a response, nil when absent.
	Error json.RawMessage
}

// IsInvoke reports whether f expects a response.
func (f *Frame) IsInvoke() bool { return f.HasEvent && f.CID != nil }

// IsResponse reports whether f answers an earlier invoke.
func (f *Frame) IsResponse() bool { return !f.HasEvent && f.RID != nil }

// Decode parses one WebSocket message. A JSON object is one frame; a JSON
// array is a batch whose elements are decoded in order (an element that is
// not an object yields a zero Frame). Anything else, including text that
// starts like JSON but does not parse, is raw: Decode returns raw == true and
// the caller hands the message to its raw-message hook. Decoded frames are
// appended to dst, so a caller can reuse one slice per connection; the
// frames alias msg.
func Decode(msg []byte, dst []Frame) (frames []Frame, batch, raw bool) {
	i := skipSpace(msg, 0)
	if i == len(msg) || (msg[i] != '{' && msg[i] != '[') {
		return dst, false, true
	}
	if !Valid(msg) {
		return dst, false, true
	}
	v := trimSpace(msg)
	if v[0] == '{' {
		f, _ := decodeObject(v, 0)
		return append(dst, f), false, false
	}
	// A batch: walk the array's elements, each once.
	j := skipSpace(v, 1)
	for j < len(v) && v[j] != ']' {
		var end int
		if v[j] == '{' {
			var f Frame
			f, end = decodeObject(v, j)
			dst = append(dst, f)
		} else {
			end = skipValue(v, j)
			dst = append(dst, Frame{})
		}
		j = skipSpace(v, end)
		if j < len(v) && v[j] == ',' {
			j = skipSpace(v, j+1)
		}
	}
	return dst, true, false
}

// decodeObject reads the frame whose object starts at v[i] and returns it
// with the index just past the object.
func decodeObject(v []byte, i int) (Frame, int) {
	var f Frame
	end := walkObject(v, i, func(key, val []byte) bool {
		switch {
		case keyIs(key, "event"):
			f.Event, f.HasEvent = "", false
			if val[0] == '"' {
				f.Event, f.HasEvent = eventName(val)
			}
		case keyIs(key, "cid"):
			f.CID = nil
			if IsNumber(val) {
				f.CID = val
			}
		case keyIs(key, "rid"):
			f.RID = nil
			if IsNumber(val) {
				f.RID = val
			}
		case keyIs(key, "data"):
			f.Data = val
		case keyIs(key, "error"):
			f.Error = val
		}
		return true
	})
	return f, end
}

// Publish reads the {"channel": ..., "data": ...} object of a #publish
// event in one pass: the channel name and the raw message. ok is false
// when the channel is missing or not a string.
func Publish(v json.RawMessage) (channel string, data json.RawMessage, ok bool) {
	ch, data := PublishFields(v)
	channel, ok = String(ch)
	return channel, data, ok
}

// PublishFields is Publish with the channel left as its raw JSON value,
// for callers that look the name up without allocating it (see Plain).
func PublishFields(v json.RawMessage) (channel, data json.RawMessage) {
	eachField(trimSpace(v), func(key, val []byte) bool {
		switch {
		case keyIs(key, "channel"):
			channel = val
		case keyIs(key, "data"):
			data = val
		}
		return true
	})
	return channel, data
}

// Plain returns the body of a JSON string of plain ASCII (no escapes),
// without copying it; ok is false for anything else (use String then).
func Plain(v json.RawMessage) (body []byte, ok bool) {
	v = trimSpace(v)
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	body = v[1 : len(v)-1]
	for _, c := range body {
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return nil, false
		}
	}
	return body, true
}

// knownEvents are the event names of the protocol itself: decoding one of
// them returns this string instead of allocating a copy.
var knownEvents = []string{"#publish", "#subscribe", "#unsubscribe", "#handshake", "#authenticate",
	"#removeAuthToken", "#setAuthToken", "#kickOut", "#disconnect"}

func eventName(q []byte) (string, bool) {
	body := q[1 : len(q)-1]
	if len(body) > 0 && body[0] == '#' {
		for _, e := range knownEvents {
			if string(body) == e {
				return e, true
			}
		}
	}
	return unquote(q)
}
