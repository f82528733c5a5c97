//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// sigtermWatch follows the logs of a set of worker pods for the line each
// logs when SIGTERM starts its drain ("worker draining"), so that a test
// measures the drain from the signal, as the promise is worded, and not
// from the kubectl command that led to it (the API server, the
// ReplicaSet controller and the kubelet take their own time to get there).
type sigtermWatch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	at     map[string]time.Time // pod -> its drain's start
}

// watchSIGTERM starts following pods' logs (their lines from now on).
func watchSIGTERM(t *testing.T, namespace string, pods []string) *sigtermWatch {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	w := &sigtermWatch{cancel: cancel, at: make(map[string]time.Time)}
	// From a second ago (the API's precision): kubectl may attach after
	// the line it looks for was written, and a worker logs it only once.
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	for _, p := range pods {
		cmd := exec.CommandContext(ctx, kubectlBin, "-n", namespace, "logs", "-f", "--since-time="+since, p)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			t.Logf("kubectl logs -f %s: %v", p, err)
			continue
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() {
				if err := cmd.Wait(); err != nil && ctx.Err() == nil {
					t.Logf("kubectl logs -f %s: %v: %s", p, err, strings.TrimSpace(stderr.String()))
				}
			}()
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				var line struct {
					Time time.Time `json:"time"`
					Msg  string    `json:"msg"`
				}
				if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "worker draining" {
					w.mu.Lock()
					w.at[p] = line.Time
					w.mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *sigtermWatch) stop() {
	w.cancel()
	w.wg.Wait()
}

// first is the earliest drain start seen, waiting up to 10 s for the
// followed pods' logs to end (a drained worker exits); ok is false when
// no pod logged one.
func (w *sigtermWatch) first(t *testing.T) (time.Time, bool) {
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	for p, at := range w.at {
		t.Logf("%s: SIGTERM, drain started at %s", p, at.Format("15:04:05.000"))
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// since is when the drain the test caused began: the first SIGTERM the
// workers logged, else (no pod logged one) the action itself.
func (w *sigtermWatch) since(t *testing.T, action time.Time) time.Time {
	at, ok := w.first(t)
	if !ok {
		t.Logf("no worker logged its drain: measuring from the action")
		return action
	}
	t.Logf("first SIGTERM %v after the action", at.Sub(action).Round(time.Millisecond))
	return at
}
