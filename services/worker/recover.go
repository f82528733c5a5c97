package worker

// Fault isolation: a panic in user code (a procedure, receiver, middleware
// or hook), or in the server's own handling of one socket's message, ends
// that socket at most, never the process. An invoke whose handling
// panicked gets an error response and its socket lives on; anything else
// closes the socket with 1011. Every recovered panic is logged with its
// stack and the socket's id, and counted in scc_worker_panics_total.

import (
	"fmt"
	"runtime/debug"

	"github.com/scc-k8s/scc/pkg/codec"
)

// errInternal is what the client gets for an action whose handling
// panicked. It says nothing of the panic: that goes to the log.
var errInternal = codec.NewError("Error", "Internal server error")

// panicked logs and counts a recovered panic; sock may be nil.
func (srv *Server) panicked(where string, sock *Socket, v any) {
	srv.metrics.panics.WithLabelValues(where).Inc()
	args := []any{"where", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack())}
	if sock != nil {
		args = append(args, "conn", sock.id)
	}
	srv.log.Error("recovered from a panic", args...)
}

// callMiddleware runs one middleware function; a panic in it is recovered
// and returned as errInternal.
func callMiddleware[T any](srv *Server, sock *Socket, where string, mw func(T) error, arg T) (err error) {
	defer func() {
		if v := recover(); v != nil {
			srv.panicked(where, sock, v)
			err = errInternal
		}
	}()
	return mw(arg)
}

// callProcedure runs a procedure; a panic in it becomes errInternal.
func (s *Socket) callProcedure(fn ProcedureFunc, r *Request) (res any, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.srv.panicked("procedure", s, v)
			res, err = nil, errInternal
		}
	}()
	return fn(r)
}

// guard runs fn; a panic in it closes the socket with 1011 and reports
// false.
func (s *Socket) guard(where string, fn func()) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			s.srv.panicked(where, s, v)
			s.closeWith(CloseInternalError, "internal server error")
			ok = false
		}
	}()
	fn()
	return true
}

// handleMessage is onMessage under a guard: a panic the finer guards do
// not catch (the server's own code) closes this socket with 1011.
func (s *Socket) handleMessage(msg []byte) {
	s.guard("message", func() { s.onMessage(msg) })
}
