//go:build !linux

package gateway

import (
	"errors"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/scc-k8s/scc/internal/tunnel"
)

// relays exist on Linux only; elsewhere every tunnel is pumped by
// goroutines (pump.go).
type relays struct{}

func newRelays(in, out func(int64), gone func(cut bool), cutting *atomic.Bool) (*relays, error) {
	return nil, nil
}

func (rs *relays) add(client, worker net.Conn, tail frameTail, done func()) error {
	return errors.New("relay: not on this system")
}

func (rs *relays) shutdownAll() int { return 0 }

func (rs *relays) endWorkers() {}

func (rs *relays) close() {}

func (rs *relays) sessionsCount() int { return 0 } // nil on this system

// serveTunneled: tunnels live in the relay loops, so not here.
func (g *Gateway) serveTunneled(w http.ResponseWriter, r *http.Request, b *backend, ip string) (bool, error) {
	return false, tunnel.ErrUnsupported
}
