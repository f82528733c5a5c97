package worker

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClientAddr feeds X-Forwarded-For values (what a client may send
// through a trusted proxy) to clientAddr: it never panics, and answers the
// peer or an address that stands in the header.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"", "1.2.3.4", "6.6.6.6, 1.2.3.4", "1.2.3.4, 10.0.0.9", "garbage", " , ,", "::1, fe80::1%eth0",
		"10.0.0.1,10.0.0.2,10.0.0.3", "1.2.3.4,,5.6.7.8", "[::1]:80"} {
		f.Add(s)
	}
	trusted, _ := ParsePrefixes("10.0.0.0/8,127.0.0.1")
	s := &Server{cfg: Config{TrustedProxies: trusted}}
	f.Fuzz(func(t *testing.T, xff string) {
		r := &http.Request{RemoteAddr: "10.0.0.5:1234", Header: http.Header{"X-Forwarded-For": {xff}}}
		got := s.clientAddr(r)
		if got == "10.0.0.5" {
			return
		}
		if _, err := netip.ParseAddr(got); err != nil || !strings.Contains(xff, got) {
			t.Fatalf("X-Forwarded-For %q gave %q", xff, got)
		}
	})
}
