package testutil

// StartJSLoad drives e2e/load.mjs: the official SocketCluster client (19.x)
// subscribing and publishing through a gateway while a test changes the
// cluster under it (the e2e suite on Kubernetes, the fault suite on
// processes).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// JSReport is load.mjs's count of one run (see its comments for each field).
type JSReport struct {
	Clients      int            `json:"clients"`
	Published    int            `json:"published"`
	Acked        int            `json:"acked"`
	Failed       int            `json:"failed"`
	LoopDelayMax int            `json:"loopDelayMaxMs"`
	MarginMs     int            `json:"marginMs"`
	Delivered    int            `json:"delivered"`
	Owed         int            `json:"owed"`
	Lost         int            `json:"lost"`
	Duplicates   int            `json:"duplicates"`
	AtEdges      int            `json:"atEdges"`
	WhileAway    int            `json:"whileAway"`
	Reconnected  int            `json:"reconnected"`
	NotBack      int            `json:"notBack"`
	BackWithinMs int            `json:"backWithinMs"`
	Codes        map[string]int `json:"codes"`
	LostSamples  []any          `json:"lostSamples"`
	// Of the reconnected clients: their first and last close after the
	// action, the longest from a client's last close until it was back,
	// and how many had a connection attempt fail on the way back.
	FirstCloseMs     int `json:"firstCloseMs"`
	LastCloseMs      int `json:"lastCloseMs"`
	BackAfterCloseMs int `json:"backAfterCloseMs"`
	Retried          int `json:"retried"`
}

func (r JSReport) String() string {
	return fmt.Sprintf("%d clients; published %d, acked %d, failed %d; owed %d, lost %d, duplicates %d, "+
		"missed while away %d, at a subscription's edge %d (margin %d ms: the tool's event loop stalled up to %d ms); reconnected %d (codes %v), not back %d, all back within %d ms "+
		"(closed %d-%d ms after the action, back at most %d ms after the close, %d retried)",
		r.Clients, r.Published, r.Acked, r.Failed, r.Owed, r.Lost, r.Duplicates,
		r.WhileAway, r.AtEdges, r.MarginMs, r.LoopDelayMax, r.Reconnected, r.Codes, r.NotBack, r.BackWithinMs,
		r.FirstCloseMs, r.LastCloseMs, r.BackAfterCloseMs, r.Retried)
}

// JSLoad is a running load.mjs.
type JSLoad struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	cancel context.CancelFunc
}

// StartJSLoad starts official clients against host:port and returns once
// all are subscribed and publishing. repoRoot locates e2e/load.mjs.
func StartJSLoad(t testing.TB, repoRoot, host string, port, clients, channels, rate int) *JSLoad {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	cmd := exec.CommandContext(ctx, "node", filepath.Join(repoRoot, "e2e", "load.mjs"))
	cmd.Env = append(os.Environ(), "SCC_HOST="+host, fmt.Sprint("SCC_PORT=", port),
		fmt.Sprint("SCC_CLIENTS=", clients), fmt.Sprint("SCC_CHANNELS=", channels), fmt.Sprint("SCC_RATE=", rate))
	cmd.Stderr = os.Stderr
	DieWithTest(cmd)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	l := &JSLoad{cmd: cmd, stdin: stdin, lines: make(chan string, 4), cancel: cancel}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()
	t.Cleanup(l.kill)
	select {
	case line, ok := <-l.lines:
		if !ok || line != "ready" {
			t.Fatalf("load.mjs: %q instead of ready", line)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("load.mjs: not ready in 90 s")
	}
	return l
}

// Stop ends the run and returns its counts; reconnect times are measured
// from the action at actionAt.
func (l *JSLoad) Stop(t testing.TB, actionAt time.Time) JSReport {
	t.Helper()
	fmt.Fprintf(l.stdin, "stop %d\n", actionAt.UnixMilli())
	var r JSReport
	select {
	case line, ok := <-l.lines:
		if !ok {
			t.Fatal("load.mjs ended without a report")
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("load.mjs: %v: %q", err, line)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("load.mjs: no report in 60 s")
	}
	_ = l.cmd.Wait()
	if len(r.LostSamples) > 0 {
		b, _ := json.Marshal(r.LostSamples)
		t.Logf("lost, first ones: %s", b)
	}
	return r
}

func (l *JSLoad) kill() {
	l.cancel()
	_ = l.cmd.Wait()
}
