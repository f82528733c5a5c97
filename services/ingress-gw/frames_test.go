package gateway

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// frameSpec is one frame of a test stream.
type frameSpec struct {
	op     byte
	n      int
	masked bool
	long   bool // the length in the next wider form than needed
}

// appendFrame appends f's header and n payload bytes.
func appendFrame(b []byte, f frameSpec) []byte {
	mask := byte(0)
	if f.masked {
		mask = 0x80
	}
	b = append(b, 0x80|f.op)
	switch {
	case f.n < 126 && !f.long:
		b = append(b, mask|byte(f.n))
	case f.n < 1<<16 && !(f.long && f.n >= 126):
		b = append(b, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(f.n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(f.n))
	}
	if f.masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, make([]byte, f.n)...)
}

// checkStream feeds the frames' bytes in the chunks cut picks and checks
// canSayGone after each: true exactly between two frames before any
// close frame's header.
func checkStream(t *testing.T, frames []frameSpec, cut func(left int) int) {
	t.Helper()
	var b []byte
	ends := map[int]bool{0: true}
	closedAt := -1 // the offset at which a close frame's header is complete
	for _, f := range frames {
		start := len(b)
		b = appendFrame(b, f)
		ends[len(b)] = true
		if f.op == 0x8 && closedAt < 0 {
			closedAt = start + (len(b) - start - f.n)
		}
	}
	var ft frameTail
	for off := 0; off < len(b); {
		n := max(1, min(cut(len(b)-off), len(b)-off))
		ft.feed(b[off : off+n])
		off += n
		want := ends[off] && (closedAt < 0 || off < closedAt)
		if got := ft.canSayGone(); got != want {
			t.Fatalf("after %d of %d bytes: canSayGone %v, want %v (frames %+v)", off, len(b), got, want, frames)
		}
	}
	if ft.broken {
		t.Fatalf("a well-formed stream taken for broken (frames %+v)", frames)
	}
}

func TestFrameTail(t *testing.T) {
	frames := []frameSpec{
		{op: 0x1, n: 0}, {op: 0x1, n: 125}, {op: 0x2, n: 126}, {op: 0x1, n: 65535},
		{op: 0x0, n: 65536}, {op: 0x9, n: 4}, {op: 0x1, n: 3, masked: true},
		{op: 0x1, n: 10, long: true}, {op: 0x1, n: 300, long: true}, {op: 0x1, n: 1 << 20},
	}
	whole := func(left int) int { return left }
	one := func(int) int { return 1 }
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(left int) int { return 1 + rng.IntN(min(left, 20000)) }
	for _, cut := range []func(int) int{whole, one, random} {
		checkStream(t, frames, cut)
		checkStream(t, append(append([]frameSpec{}, frames[:3]...), frameSpec{op: 0x8, n: 13}, frameSpec{op: 0x1, n: 5}), cut)
	}

	var ft frameTail
	if !ft.canSayGone() {
		t.Fatal("a stream that has sent nothing cannot take a close frame")
	}
	ft.feed([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1})
	if !ft.broken || ft.canSayGone() {
		t.Fatal("a 64-bit length with its top bit set was followed")
	}
}

// FuzzFrameTail: any bytes are followed without a panic; streams of
// well-formed frames cut anywhere are followed exactly.
func FuzzFrameTail(f *testing.F) {
	f.Add([]byte{0x01, 0x05, 0x00, 0x08, 0x02, 0x00}, uint64(1))
	f.Add([]byte{0x02, 0x7e, 0x01, 0x01, 0xff, 0x02, 0x08, 0x03, 0x00}, uint64(7))
	f.Add([]byte{0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		var raw frameTail
		raw.feed(data) // hostile bytes: must not panic
		_ = raw.canSayGone()

		var frames []frameSpec
		for i := 0; i+2 < len(data) && len(frames) < 16; i += 3 {
			n := int(data[i+1])
			switch data[i+2] & 0x3 {
			case 1:
				n += 126
			case 2:
				n = n<<8 + 65536
			}
			frames = append(frames, frameSpec{op: data[i] & 0x0f, n: n, masked: data[i+2]&0x4 != 0, long: data[i+2]&0x8 != 0})
		}
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		checkStream(t, frames, func(left int) int { return 1 + rng.IntN(min(left, 1+int(seed%4096))) })
	})
}
