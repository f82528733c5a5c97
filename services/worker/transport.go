//go:build !gorillaws

package worker

import (
	"net/http"

	"github.com/scc-k8s/scc/internal/ws"
)

// The WebSocket layer sockets run on: internal/ws. Built with
// -tags gorillaws, the worker runs on gorilla/websocket instead
// (transport_gorilla.go), so that what our own layer is for stays
// measured (docs/benchmarks.md), not remembered.
type (
	wsConn   = ws.Conn
	wsReader = ws.Reader
)

func upgradeWS(w http.ResponseWriter, r *http.Request, opts ws.Options) (*wsConn, error) {
	return ws.Upgrade(w, r, opts)
}
