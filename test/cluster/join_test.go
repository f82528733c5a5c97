package cluster_test

import (
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/clustertest"
)

// Members that start before state is reachable (a fresh install: pods come
// up in any order, the state Service gets endpoints late) all join within
// a second of state becoming reachable, however long they had been
// failing: their connection to state is dialled afresh instead of waiting
// out gRPC's grown backoff.
func TestMembersJoinWhenStateComesLate(t *testing.T) {
	limit := time.Second
	if raceEnabled {
		limit = 3 * time.Second // everything runs 5-10x slower
	}
	for _, late := range []time.Duration{500 * time.Millisecond, 4 * time.Second} {
		c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 2, StateDelay: late})
		took := time.Since(c.StateStarted)
		t.Logf("state %v late: 2 brokers and 2 workers joined and stable %v after it started", late, took.Round(time.Millisecond))
		if took > limit {
			t.Errorf("state %v late: members joined %v after state started, want within %v", late, took, limit)
		}
		c.Stop()
	}
}
