package cluster_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/cluster"
)

// Publishes of the largest payload a client may send, many in flight,
// cross the cluster: every gRPC message between the components stays
// within what the other side accepts (batches are cut by bytes, not only
// by count), so nothing fails and everything arrives.
func TestMaxPayloadPublishes(t *testing.T) {
	const maxPayload = 1 << 20
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 2,
		Worker: worker.Config{MaxPayload: maxPayload, MaxPendingBytes: 512 << 20}})
	// The data is a JSON string filling the message up to the limit.
	data := json.RawMessage(`"` + strings.Repeat("x", maxPayload-200) + `"`)
	n := 48
	if raceEnabled {
		n = 12 // each 1 MiB message is checked byte by byte: 5-10x slower under -race
	}
	channels := []string{"big-a", "big-b", "big-c", "big-d"}
	var got atomic.Int64
	for _, w := range c.Workers {
		sub := dial(t, w.URL)
		for _, ch := range channels {
			if err := sub.Subscribe(t.Context(), ch, func(_ string, d json.RawMessage) {
				if len(d) == len(data) {
					got.Add(1)
				}
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub, err := client.Dial(t.Context(), client.Options{URL: c.Workers[0].URL, AckTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	errs := make(chan error, n)
	for i := range n {
		pub.PublishAsync(channels[i%len(channels)], data, func(err error) { errs <- err })
	}
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("publishes not acknowledged")
		}
	}
	want := int64(n * len(c.Workers))
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries", got.Load(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A broker link's queue is bounded in bytes: publishes beyond it fail at
// once with a clear error instead of the queue growing without limit, and
// every publish that was acknowledged is delivered.
func TestLinkQueueBounded(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 2, Link: cluster.Config{MaxLinkQueueBytes: 64 << 10}})
	var delivered atomic.Int64
	sub, err := c.Workers[1].Server.Exchange().Subscribe(t.Context(), "flood", func(string, json.RawMessage) { delivered.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	data := json.RawMessage(`"` + strings.Repeat("f", 4000) + `"`)
	const n = 3000
	results := make(chan error, n)
	x := c.Workers[0].Server.Exchange()
	for range n {
		x.PublishAsync("flood", data, func(err error) { results <- err })
	}
	acked, full := 0, 0
	for range n {
		select {
		case err := <-results:
			switch {
			case err == nil:
				acked++
			case errors.Is(err, cluster.ErrLinkFull):
				full++
			default:
				t.Fatalf("publish: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d acked, %d refused, the rest never answered", acked, full)
		}
	}
	t.Logf("%d publishes: %d acked, %d refused with ErrLinkFull", n, acked, full)
	if full == 0 || acked == 0 {
		t.Fatalf("%d acked, %d refused: want both", acked, full)
	}
	deadline := time.Now().Add(10 * time.Second)
	for delivered.Load() < int64(acked) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acked publishes delivered", delivered.Load(), acked)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
