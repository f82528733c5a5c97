package operator_test

import (
	"net/http"
	"strings"
	"sync"
)

// writeCounter counts the operator's requests that write (anything but
// GET, LIST and WATCH), by method and path.
type writeCounter struct {
	mu sync.Mutex
	by map[string]int
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet {
			w.mu.Lock()
			if w.by == nil {
				w.by = map[string]int{}
			}
			w.by[r.Method+" "+r.URL.Path]++
			w.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

// in counts the writes to objects of one namespace (the other tests'
// namespaces never finish terminating here: envtest runs no namespace
// controller, and the operator's retries there are not this test's).
func (w *writeCounter) in(ns string) (int, map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, c := 0, map[string]int{}
	for k, v := range w.by {
		if strings.Contains(k, "/namespaces/"+ns+"/") {
			n += v
			c[k] = v
		}
	}
	return n, c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
