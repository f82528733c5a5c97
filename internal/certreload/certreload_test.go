package certreload

import (
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
)

func servedName(t *testing.T, addr string, f *testutil.TLSFiles) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.Pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// A renewed certificate written over the files is served within
// CheckEvery; a broken pair leaves the last good one in use.
func TestReloadOnChange(t *testing.T) {
	f := testutil.NewTLSFiles(t)
	r, err := New(f.CertFile, f.KeyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) { _ = c.(*tls.Conn).Handshake(); c.Close() }(c)
		}
	}()
	if got := servedName(t, ln.Addr().String(), f); got != "scc-test" {
		t.Fatalf("served %q", got)
	}
	f.Issue("renewed")
	deadline := time.Now().Add(3 * CheckEvery)
	for servedName(t, ln.Addr().String(), f) != "renewed" {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not picked up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := writeGarbage(f.KeyFile); err != nil {
		t.Fatal(err)
	}
	r.Reload()
	if got := servedName(t, ln.Addr().String(), f); got != "renewed" {
		t.Fatalf("after a broken key: served %q, want the last good certificate", got)
	}
	if _, err := New(f.CertFile, f.KeyFile, nil); err == nil {
		t.Fatal("New accepted a broken key")
	}
}

func writeGarbage(path string) error { return os.WriteFile(path, []byte("not a key"), 0o600) }
