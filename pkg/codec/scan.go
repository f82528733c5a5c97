package codec

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// The helpers in this file walk JSON that has already been validated
// (Valid). They never allocate on the common path and treat keys
// case-sensitively, as JavaScript does (encoding/json would not).

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string that starts at b[i] == '"'.
// It looks at eight bytes at a time for the quote or backslash that ends a
// run of plain content.
func skipString(b []byte, i int) int {
	i++
	for {
		for len(b)-i >= 8 {
			x := binary.LittleEndian.Uint64(b[i:])
			q, s := x^(ones*'"'), x^(ones*'\\')
			if m := ((q - ones) &^ q & highs) | ((s - ones) &^ s & highs); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return len(b)
		}
		switch b[i] {
		case '\\':
			i += 2
		case '"':
			return i + 1
		default:
			i++
		}
	}
}

// skipValue returns the index just past the value that starts at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// trimSpace strips JSON whitespace from both ends of b.
func trimSpace(b []byte) []byte {
	i := skipSpace(b, 0)
	j := len(b)
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

// eachField calls fn for every member of the JSON object v (valid JSON,
// no surrounding space). key is the raw quoted key. It stops when fn
// returns false.
func eachField(v []byte, fn func(key, val []byte) bool) {
	if len(v) < 2 || v[0] != '{' {
		return
	}
	walkObject(v, 0, fn)
}

// walkObject calls fn for the members of the object that starts at
// v[i] == '{' (valid JSON) and returns the index just past it, or, when fn
// stops the walk, -1.
func walkObject(v []byte, i int, fn func(key, val []byte) bool) int {
	i = skipSpace(v, i+1)
	for i < len(v) && v[i] == '"' {
		ks := i
		i = skipString(v, i)
		key := v[ks:i]
		i = skipSpace(v, i)
		i++ // ':'
		i = skipSpace(v, i)
		vs := i
		i = skipValue(v, i)
		if !fn(key, v[vs:i]) {
			return -1
		}
		i = skipSpace(v, i)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return i + 1 // past '}'
}

// keyIs reports whether the raw quoted key equals name, decoding escapes
// when the key has any.
func keyIs(key []byte, name string) bool {
	if len(key) == len(name)+2 && string(key[1:len(key)-1]) == name {
		return true
	}
	for _, c := range key {
		if c == '\\' {
			s, ok := unquote(key)
			return ok && s == name
		}
	}
	return false
}

// Field returns the value of the member named name in the JSON object v,
// as JavaScript would see it (the last duplicate wins). v must be valid
// JSON; anything that is not an object has no fields.
func Field(v json.RawMessage, name string) (json.RawMessage, bool) {
	v = trimSpace(v)
	var out []byte
	found := false
	eachField(v, func(key, val []byte) bool {
		if keyIs(key, name) {
			out, found = val, true
		}
		return true
	})
	return out, found
}

// Get is Field for callers that treat a missing member like null: the
// member's value, or nil.
func Get(v json.RawMessage, name string) json.RawMessage {
	out, _ := Field(v, name)
	return out
}

// IsString reports whether v is a JSON string.
func IsString(v json.RawMessage) bool {
	v = trimSpace(v)
	return len(v) >= 2 && v[0] == '"'
}

// IsNumber reports whether v is a JSON number.
func IsNumber(v json.RawMessage) bool {
	v = trimSpace(v)
	return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))
}

// IsObject reports whether v is a JSON object.
func IsObject(v json.RawMessage) bool {
	v = trimSpace(v)
	return len(v) >= 2 && v[0] == '{'
}

// IsNull reports whether v is absent or the JSON literal null.
func IsNull(v json.RawMessage) bool {
	v = trimSpace(v)
	return len(v) == 0 || string(v) == "null"
}

// String returns the Go string of a JSON string value.
func String(v json.RawMessage) (string, bool) {
	v = trimSpace(v)
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	return unquote(v)
}

// Int returns the integer value of a JSON number, truncating a fraction.
func Int(v json.RawMessage) (int64, bool) {
	v = trimSpace(v)
	if !IsNumber(v) {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return 0, false
	}
	return int64(f), true
}

// unquote decodes a quoted JSON string (valid JSON).
func unquote(q []byte) (string, bool) {
	body := q[1 : len(q)-1]
	simple := true
	for _, c := range body {
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			simple = false
			break
		}
	}
	if simple {
		return string(body), true
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", false
	}
	return s, true
}
