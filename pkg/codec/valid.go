package codec

import (
	"encoding/binary"
	"math/bits"
)

// Valid reports whether b is one JSON value (with optional surrounding
// space), exactly as encoding/json's Valid decides it: RFC 8259 grammar,
// bytes >= 0x80 inside strings accepted as they are, and at most
// maxNesting levels of arrays and objects. It is the first thing done to
// every inbound message, so it is one pass without allocation for
// nesting up to 64 levels, and it scans string bodies eight bytes at a
// time.
func Valid(b []byte) bool {
	var small [64]byte
	stack := small[:0] // '{' or '[' for every open container
	i := skipSpace(b, 0)
value:
	if i >= len(b) {
		return false
	}
	switch c := b[i]; {
	case c == '"':
		if i = validString(b, i); i < 0 {
			return false
		}
	case c == '{' || c == '[':
		if len(stack) == maxNesting {
			return false
		}
		stack = append(stack, c)
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == c+2 { // '}' and ']' follow their openers by 2
			stack = stack[:len(stack)-1]
			i++
			break
		}
		if c == '{' {
			goto key
		}
		goto value
	case c == '-' || (c >= '0' && c <= '9'):
		if i = validNumber(b, i); i < 0 {
			return false
		}
	case c == 't':
		if !hasLiteral(b, i, "true") {
			return false
		}
		i += 4
	case c == 'f':
		if !hasLiteral(b, i, "false") {
			return false
		}
		i += 5
	case c == 'n':
		if !hasLiteral(b, i, "null") {
			return false
		}
		i += 4
	default:
		return false
	}

	// After a value: close containers, or go on to the next member.
	for {
		i = skipSpace(b, i)
		if len(stack) == 0 {
			return i == len(b)
		}
		if i >= len(b) {
			return false
		}
		top := stack[len(stack)-1]
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
			if top == '{' {
				goto key
			}
			goto value
		case '}':
			if top != '{' {
				return false
			}
		case ']':
			if top != '[' {
				return false
			}
		default:
			return false
		}
		stack = stack[:len(stack)-1]
		i++
	}

key:
	if i >= len(b) || b[i] != '"' {
		return false
	}
	if i = validString(b, i); i < 0 {
		return false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return false
	}
	i = skipSpace(b, i+1)
	goto value
}

// maxNesting is encoding/json's limit on nested arrays and objects.
const maxNesting = 10000

func hasLiteral(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// stringStops marks, in the high bit of each byte, the bytes of x that end
// a run of plain string content: '"', '\\' and control bytes below 0x20.
// Bits above the lowest marked byte may be spurious (borrows), so only the
// lowest one is to be trusted.
func stringStops(x uint64) uint64 {
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	return ((quote - ones) &^ quote & highs) |
		((slash - ones) &^ slash & highs) |
		((x - ones*0x20) &^ x & highs)
}

// validString returns the index just past the JSON string starting at
// b[i] == '"', or -1 when it is not a valid string.
func validString(b []byte, i int) int {
	i++
	for {
		for len(b)-i >= 8 {
			m := stringStops(binary.LittleEndian.Uint64(b[i:]))
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
			break
		}
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// validNumber returns the index just past the JSON number starting at
// b[i], or -1 when it is not a valid number.
func validNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
