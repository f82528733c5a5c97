package ws

import "unicode/utf8"

// utf8Stream validates UTF-8 that arrives in pieces (the chunks of a
// frame, the fragments of a message): a character may be split between
// two pieces, and an invalid sequence is found as soon as its bytes are
// in, not when the message ends (RFC 6455 section 8.1: fail fast).
type utf8Stream struct {
	tail [utf8.UTFMax]byte // a character's first bytes, still incomplete
	n    int
}

// write checks the next piece; false means the text is not UTF-8.
func (u *utf8Stream) write(p []byte) bool {
	if u.n > 0 {
		// Complete the pending character with the piece's first bytes.
		k := copy(u.tail[u.n:], p)
		full := u.tail[:u.n+k]
		if !utf8.FullRune(full) {
			if !validPrefix(full) {
				return false
			}
			u.n += k
			return true
		}
		r, size := utf8.DecodeRune(full)
		if r == utf8.RuneError && size <= 1 {
			return false
		}
		p = p[size-u.n:]
		u.n = 0
	}
	// Hold back a character cut off at the end of the piece.
	cut := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return false
	}
	if cut < len(p) {
		if !validPrefix(p[cut:]) {
			return false
		}
		u.n = copy(u.tail[:], p[cut:])
	}
	return true
}

// done reports whether the text ended on a character boundary, and resets.
func (u *utf8Stream) done() bool {
	ok := u.n == 0
	u.n = 0
	return ok
}

// validPrefix reports whether p (shorter than its character) can begin a
// valid UTF-8 sequence: a lead byte of a multi-byte character, and
// continuation bytes in the ranges that exclude overlong forms, surrogates
// and code points above U+10FFFF (Unicode table 3-7).
func validPrefix(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	b0 := p[0]
	if b0 < 0xC2 || b0 > 0xF4 {
		return false
	}
	for i := 1; i < len(p); i++ {
		lo, hi := byte(0x80), byte(0xBF)
		if i == 1 {
			switch b0 {
			case 0xE0:
				lo = 0xA0
			case 0xED:
				hi = 0x9F
			case 0xF0:
				lo = 0x90
			case 0xF4:
				hi = 0x8F
			}
		}
		if p[i] < lo || p[i] > hi {
			return false
		}
	}
	return true
}
