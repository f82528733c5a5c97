package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/broker"
)

// A worker's report that it lost a stream (Member.lost_links, through
// state) ends the stream at the broker at once; its subscriptions are
// held while the worker has clients, and let go as soon as a report that
// lists the stream lost shows it without any. A stream whose first
// message comes after the report that lists it is refused.
func TestReportedLostLink(t *testing.T) {
	srv, c := serve(t, broker.Config{})
	srv.SetRing("b1", 1, []string{"b1"}, nil)
	worker := func(load uint64, lost ...uint64) []*sccv1.Member {
		m := &sccv1.Member{Id: "w", Role: sccv1.Role_ROLE_WORKER, Load: load}
		for _, n := range lost {
			m.LostLinks = append(m.LostLinks, &sccv1.LostLink{BrokerId: "b1", Link: n},
				&sccv1.LostLink{BrokerId: "b2", Link: n + 10}) // another broker's: not this one's business
		}
		return []*sccv1.Member{m}
	}
	srv.SetWorkers(worker(5))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w1, err := c().Link(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = w1.Send(&sccv1.LinkRequest{WorkerId: "w", Confirms: true, Link: 1, Ops: []*sccv1.Op{
		op(sccv1.OpKind_OP_KIND_SUBSCRIBE, "x", "", 1), op(sccv1.OpKind_OP_KIND_REPLACE, "", "", 2)}})
	if r, err := w1.Recv(); err != nil || r.Acked != 2 {
		t.Fatalf("subscribe ack: %v %v", r, err)
	}
	pub := link(t, c, "pub")
	seq := uint64(0)
	publish := func() *sccv1.LinkResponse {
		t.Helper()
		seq++
		_ = pub.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_PUBLISH, "x", "m", seq)}})
		return recvAck(t, pub, 5*time.Second)
	}

	// Reported lost while the broker still has it (its own timeout is 5 s).
	srv.SetWorkers(worker(5, 1))
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := w1.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Fatal("the stream the worker reported lost is still open at the broker")
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return srv.HeldWorkers() == 1 && srv.Links() == 1 }, "the lost stream's subscriptions held")
	if r := publish(); len(r.Failed) != 1 || !strings.Contains(r.Failed[0].Message, "unreachable") {
		t.Fatalf("publish to the held channel: %v, want it failed as unreachable", r)
	}

	// Without clients, in a report that does not list the stream: the
	// load may predate the loss, so the hold stays (for now).
	srv.SetWorkers(worker(0))
	if srv.HeldWorkers() != 1 {
		t.Fatal("a report without clients that does not list the lost stream let the hold go")
	}
	// Without clients, in a report that lists it: made after the loss.
	srv.SetWorkers(worker(0, 1))
	if srv.HeldWorkers() != 0 {
		t.Fatal("a report listing the stream lost, without clients, did not let the hold go")
	}
	if r := publish(); len(r.Failed) != 0 || srv.Channels() != 0 {
		t.Fatalf("publish after the hold went: %v, %d channels", r, srv.Channels())
	}

	// A stream already reported lost when its first message arrives.
	srv.SetWorkers(worker(3, 2))
	w2, err := c().Link(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = w2.Send(&sccv1.LinkRequest{WorkerId: "w", Confirms: true, Link: 2})
	if _, err := w2.Recv(); err == nil {
		t.Fatal("a stream reported lost before its first message was served")
	}
}
