package gateway

// Moving an upgraded connection's bytes both ways without parsing them.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// halfCloseGrace is how long a tunnel may stay half-closed (one side has
// ended, the other has not) before both are closed.
const halfCloseGrace = 2 * time.Second

// pumpBuf is the size of one copy; a buffer is held only while bytes are
// on their way, never while a connection is idle.
const pumpBuf = 32 << 10

var pumpBufs = sync.Pool{New: func() any { b := make([]byte, pumpBuf); return &b }}

// errWrite marks a pump's error as dst's.
var errWrite = errors.New("pump: write")

// pump copies src to dst until src ends or either side fails (an error
// of dst's wraps errWrite), and reports the bytes copied; tail, when
// set, follows them. A src that is a plain socket is read only
// when the poller says it is readable, into a pooled buffer, so an idle
// connection holds no buffer (and, unlike splice(2), no pipe: two file
// descriptors per direction per idle connection would cap a gateway at a
// fraction of its connections). Other sources (TLS) are read with a
// small buffer of their own.
//
// Each wait for the poller follows a read that said EAGAIN: RawConn.Read
// forgets, as it starts, what the poller reported before it, so bytes (or
// the end) that arrived after a read are seen only by another read.
// Skipping that read once lost the end of a worker that died after its
// last bytes, leaving its client connected to nothing.
func pump(dst, src net.Conn, count func(int), tail *frameTail) error {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return copyBuffered(dst, src, count, tail)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return copyBuffered(dst, src, count, tail)
	}
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			bp = pumpBufs.Get().(*[]byte)
			for {
				n, rerr = syscall.Read(int(fd), *bp)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				pumpBufs.Put(bp)
				bp = nil
				return false // wait until readable
			}
			return true
		})
		if err == nil && rerr != nil {
			err = rerr
		}
		if err != nil || n <= 0 {
			if bp != nil {
				pumpBufs.Put(bp)
			}
			if err == nil { // n == 0: the peer closed its side
				return nil
			}
			return err
		}
		werr := forward(dst, (*bp)[:n], count, tail)
		pumpBufs.Put(bp)
		if werr != nil {
			return werr
		}
	}
}

// forward writes one chunk of a pump on to dst, followed by tail and
// counted once written.
func forward(dst net.Conn, p []byte, count func(int), tail *frameTail) error {
	if tail != nil {
		tail.feed(p)
	}
	if _, err := dst.Write(p); err != nil {
		return fmt.Errorf("%w: %w", errWrite, err)
	}
	if count != nil {
		count(len(p))
	}
	return nil
}

func copyBuffered(dst, src net.Conn, count func(int), tail *frameTail) error {
	buf := make([]byte, 4<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := forward(dst, buf[:n], count, tail); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// closeWrite half-closes c when it can (the peer reads EOF and may still
// send), and closes it otherwise.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	_ = c.Close()
}
