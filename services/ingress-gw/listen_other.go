//go:build !linux

package gateway

import (
	"errors"
	"net"
)

// listen listens on addr; sharing it (reuse) is Linux's SO_REUSEPORT only.
func listen(addr string, reuse bool) (net.Listener, error) {
	if reuse {
		return nil, errors.New("sharing the listen address (SO_REUSEPORT) needs Linux")
	}
	return net.Listen("tcp", addr)
}
