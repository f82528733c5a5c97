// Package certreload serves a TLS certificate from a certificate and key
// file pair and picks up new files when they change on disk, as a mounted
// Kubernetes Secret changes (its files are swapped through a symlink): the
// files are looked at again at most once per CheckEvery, on a handshake,
// and a pair that fails to load leaves the previous certificate in use.
package certreload

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// CheckEvery is the longest a changed pair of files goes unnoticed while
// handshakes arrive.
const CheckEvery = time.Second

// Reloader holds the current certificate.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times when loaded
	checked time.Time
}

// New loads the pair once (an error if it cannot) and returns the
// reloader.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.stamp0()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certreload: %w", err)
	}
	r.cert, r.stamp, r.checked = &cert, stamp, time.Now()
	return r, nil
}

// stamp0 identifies the files' current contents cheaply.
func (r *Reloader) stamp0() (string, error) {
	var out string
	for _, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f) // follows the Secret's symlinks
		if err != nil {
			return "", fmt.Errorf("certreload: %w", err)
		}
		out += fmt.Sprintf("%d/%d;", st.Size(), st.ModTime().UnixNano())
	}
	return out, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= CheckEvery {
		r.checked = now
		r.reloadLocked()
	}
	return r.cert, nil
}

// Reload looks at the files now.
func (r *Reloader) Reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked = time.Now()
	r.reloadLocked()
}

func (r *Reloader) reloadLocked() {
	stamp, err := r.stamp0()
	if err != nil || stamp == r.stamp {
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Often the moment between the two files being replaced: keep
		// the old pair and look again next time.
		r.log.Warn("TLS certificate not reloaded; keeping the previous one", "cert", r.certFile, "err", err)
		return
	}
	r.cert, r.stamp = &cert, stamp
	r.log.Info("TLS certificate reloaded", "cert", r.certFile)
}

// Listen wraps ln in TLS with the pair's certificate, reloaded as the
// files change, offering HTTP/1.1 only (WebSocket upgrades are HTTP/1.1).
func Listen(ln net.Listener, certFile, keyFile string, log *slog.Logger) (net.Listener, error) {
	r, err := New(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	tc := r.Config()
	tc.NextProtos = []string{"http/1.1"}
	return tls.NewListener(ln, tc), nil
}

// Config returns a server tls.Config that serves the current certificate
// (TLS 1.2 or newer).
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}
