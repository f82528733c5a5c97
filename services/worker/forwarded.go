package worker

// The client's address behind trusted proxies.

import (
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr is the request's client address: the peer's, unless the
// peer is a trusted proxy; then X-Forwarded-For is read from the right
// (each proxy appends the address it saw), skipping trusted proxies, and
// the first address that is not one is the client. A forged left part of
// the header is never reached while a trusted proxy appended after it.
func (s *Server) clientAddr(r *http.Request) string {
	peer := remoteAddr(r)
	if len(s.cfg.TrustedProxies) == 0 || !s.trusted(peer) {
		return peer
	}
	fwd := r.Header.Values("X-Forwarded-For")
	for i := len(fwd) - 1; i >= 0; i-- {
		parts := strings.Split(fwd[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a := strings.TrimSpace(parts[j])
			if _, err := netip.ParseAddr(a); err != nil {
				return peer // not an address: believe nothing left of it
			}
			if !s.trusted(a) {
				return a
			}
			peer = a
		}
	}
	return peer
}

func (s *Server) trusted(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParsePrefixes reads a comma-separated list of CIDR prefixes or plain
// addresses (a single host) for Config.TrustedProxies.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
