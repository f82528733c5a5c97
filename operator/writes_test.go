package operator_test

import (
	"net/http"
	"sync"
)

// writeCounter counts the operator's requests that write (anything but
// GET, LIST and WATCH), by method and path.
type writeCounter struct {
	mu sync.Mutex
	n  int
	by map[string]int
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet {
			w.mu.Lock()
			if w.by == nil {
				w.by = map[string]int{}
			}
			w.n++
			w.by[r.Method+" "+r.URL.Path]++
			w.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

func (w *writeCounter) snapshot() (int, map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := make(map[string]int, len(w.by))
	for k, v := range w.by {
		c[k] = v
	}
	return w.n, c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
