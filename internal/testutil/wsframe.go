package testutil

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// WSFrame encodes one WebSocket frame as a client sends it, for tests that
// speak raw frames: b0 is the first byte (FIN, RSV bits, opcode), declared
// the length the header states (it may lie: pass uint64(len(payload)) for
// the truth, or any value, high bit included), and the payload is masked
// unless unmasked.
func WSFrame(b0 byte, payload []byte, declared uint64, unmasked bool) []byte {
	out := []byte{b0}
	m := byte(0x80)
	if unmasked {
		m = 0
	}
	switch {
	case declared < 126:
		out = append(out, m|byte(declared))
	case declared < 1<<16:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(declared))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, declared)
	}
	if unmasked {
		return append(out, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

// ReadWSFrame reads one frame as a server sends it (unmasked) and returns
// its first byte and payload.
func ReadWSFrame(r *bufio.Reader) (b0 byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("testutil: masked server frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<30 {
		return 0, nil, errors.New("testutil: server frame over 1 GiB")
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return h[0], payload, nil
}
