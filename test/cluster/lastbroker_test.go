package cluster_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
)

// The only broker of the ring dies while publishers keep publishing, and
// a replacement joins a moment later: the migration to an empty ring that
// the death started is superseded at once, and publishes are acknowledged
// again within a second of the join.
func TestLastBrokerReplaced(t *testing.T) {
	limit := time.Second
	if raceEnabled {
		limit = 3 * time.Second
	}
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 2})
	sub := dial(t, c.Workers[1].URL)
	got := make(chan struct{}, 1<<16)
	if err := sub.Subscribe(t.Context(), "last", func(string, json.RawMessage) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, c.Workers[0].URL)
	if err := pub.Publish(t.Context(), "last", 0); err != nil {
		t.Fatal(err)
	}
	<-got
	c.KillBroker(c.Brokers[0])
	time.Sleep(400 * time.Millisecond) // state sees the ring empty, workers hold publishes
	joined := time.Now()
	c.AddBroker()
	// Publish until one is acknowledged; each waits at most 200 ms.
	for i := 1; ; i++ {
		done := make(chan error, 1)
		pub.PublishAsync("last", json.RawMessage("1"), func(err error) { done <- err })
		select {
		case err := <-done:
			if err == nil {
				took := time.Since(joined)
				t.Logf("publishes acknowledged again %v after the new broker joined", took.Round(time.Millisecond))
				if took > limit {
					t.Fatalf("publishes acknowledged again only %v after the join, want within %v", took, limit)
				}
				c.WaitStable(1)
				return
			}
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(joined) > 30*time.Second {
			t.Fatal("no publish acknowledged 30 s after the join")
		}
	}
}
