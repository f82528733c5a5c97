//go:build gorillaws

package worker

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/internal/ws"
)

// The worker on gorilla/websocket, for the side-by-side measurement only
// (go build -tags gorillaws): gorilla reads and writes every frame, with
// the settings the worker used before internal/ws (a pooled 16 KiB write
// buffer). The same methods as ws.Conn and ws.Reader, on top of it.

type wsConn struct {
	c         *websocket.Conn
	rd        *wsReader
	since     atomic.Int64
	mu        sync.Mutex
	closeSent bool
}

type wsReader struct {
	c     *websocket.Conn
	yield bool
}

var writeBufs sync.Pool

func upgradeWS(w http.ResponseWriter, r *http.Request, opts ws.Options) (*wsConn, error) {
	if e := ws.Check(r); e != nil {
		http.Error(w, e.Msg, e.Status)
		return nil, e
	}
	up := websocket.Upgrader{WriteBufferSize: 16 << 10, WriteBufferPool: &writeBufs, EnableCompression: opts.Deflate,
		CheckOrigin: func(*http.Request) bool { return true }}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(opts.ReadLimit)
	return &wsConn{c: c, rd: &wsReader{c: c}}, nil
}

func (c *wsConn) Reader() *wsReader   { return c.rd }
func (c *wsConn) NetConn() net.Conn   { return c.c.NetConn() }
func (c *wsConn) WriteStarted() int64 { return c.since.Load() }
func (c *wsConn) Close() error        { return c.c.Close() }

func (c *wsConn) WriteFramed(op int, buf []byte) error { return c.WriteMessage(op, buf[ws.MaxHeader:]) }

func (c *wsConn) WriteMessage(op int, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return ws.ErrCloseSent
	}
	c.since.Store(time.Now().UnixNano())
	err := c.c.WriteMessage(op, p)
	c.since.Store(0)
	return err
}

func (c *wsConn) WriteClose(code int, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeCloseLocked(code, reason)
}

func (c *wsConn) TryWriteClose(code int, reason string) error {
	if !c.mu.TryLock() {
		return ws.ErrBusy
	}
	defer c.mu.Unlock()
	return c.writeCloseLocked(code, reason)
}

func (c *wsConn) writeCloseLocked(code int, reason string) error {
	if err := ws.CheckCloseCode(code); err != nil {
		return err
	}
	if c.closeSent {
		return ws.ErrCloseSent
	}
	c.closeSent = true
	return c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ws.CutReason(reason)), time.Now().Add(time.Second))
}

func (r *wsReader) Next() (int, []byte, error) {
	if r.yield {
		r.yield = false
		return 0, nil, ws.ErrYield
	}
	op, msg, err := r.c.ReadMessage()
	var ce *websocket.CloseError
	switch {
	case err == nil:
		return op, msg, nil
	case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
		return 0, nil, &ws.CloseError{Code: ce.Code, Reason: ce.Text, Remote: true}
	case errors.Is(err, websocket.ErrReadLimit):
		return 0, nil, &ws.CloseError{Code: ws.CloseMessageTooBig, Reason: "message too big"}
	}
	return 0, nil, err
}

func (r *wsReader) SetLimit(n int64) { r.c.SetReadLimit(n) }
func (r *wsReader) Yield()           { r.yield = true }
func (r *wsReader) Drop()            {}
