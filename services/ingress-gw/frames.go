package gateway

// The worker-to-client half of an upgraded connection, followed frame by
// frame (headers only: payloads are counted, never looked at), so that a
// client whose worker died can be told so with a close frame of its own,
// which may only go between two frames.

// closeWorkerGone is the close code a client gets when its worker dies
// under it: 4000, after which SocketCluster clients reconnect at once
// (after any other code below 4500, and after a connection that just
// ends, the official client waits 10-20 s), as after a worker's drain
// (worker.CloseDraining; the gateway does not import the worker).
const closeWorkerGone = 4000

// goneFrame is that close frame, unmasked as a server's frames are;
// cutFrame the same code for the clients still open when a stopping
// gateway's drain deadline passes (they come back at once, through
// another gateway).
var (
	goneFrame = closeFrame(closeWorkerGone, "worker gone")
	cutFrame  = closeFrame(closeWorkerGone, "gateway draining")
)

// byeFrame is what a client whose worker's side ended first is told:
// goneFrame, or cutFrame once the gateway's drain deadline has passed.
func byeFrame(cut bool) []byte {
	if cut {
		return cutFrame
	}
	return goneFrame
}

// closeFrame is a server's close frame (a reason under 124 bytes).
func closeFrame(code uint16, reason string) []byte {
	return append([]byte{0x88, byte(2 + len(reason)), byte(code >> 8), byte(code)}, reason...)
}

// frameTail follows a server's WebSocket byte stream. Its zero value is
// at the start of a stream (just after the 101's header).
type frameTail struct {
	hdr    [14]byte // the header being read
	nhdr   int
	left   uint64 // payload bytes of the current frame still to come
	closed bool   // a close frame went by: nothing may follow it
	broken bool   // a header no server sends: the stream is left alone
}

// feed follows p, the next bytes of the stream.
func (f *frameTail) feed(p []byte) {
	for len(p) > 0 && !f.broken {
		if f.left > 0 {
			n := min(uint64(len(p)), f.left)
			f.left -= n
			p = p[n:]
			continue
		}
		f.hdr[f.nhdr] = p[0]
		f.nhdr++
		p = p[1:]
		if f.nhdr < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4 // a mask: servers do not mask, but the length still counts
		}
		if f.nhdr < need {
			continue
		}
		var n uint64
		switch l := f.hdr[1] & 0x7f; l {
		case 126:
			n = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			for _, b := range f.hdr[2:10] {
				n = n<<8 | uint64(b)
			}
			if n>>63 != 0 { // RFC 6455: the most significant bit is 0
				f.broken = true
				return
			}
		default:
			n = uint64(l)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.closed = true
		}
		f.left, f.nhdr = n, 0
	}
}

// canSayGone reports whether a close frame may be written now: the stream
// is between two frames and has not closed.
func (f *frameTail) canSayGone() bool {
	return !f.broken && !f.closed && f.nhdr == 0 && f.left == 0
}

// sayGone is canSayGone for a caller that then writes goneFrame (or
// cutFrame): the stream counts as closed from here on.
func (f *frameTail) sayGone() bool {
	if !f.canSayGone() {
		return false
	}
	f.closed = true
	return true
}
