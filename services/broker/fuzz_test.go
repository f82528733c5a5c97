package broker

import (
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	ringpkg "github.com/scc-k8s/scc/pkg/ring"
	"github.com/scc-k8s/scc/proto/sccv1"
)

// FuzzApply feeds the broker's link handler any batch a worker could send
// (a LinkRequest decoded from the fuzzer's bytes), on one link, beside a
// second link subscribed to one channel, with a ring set or not. Nothing
// may panic; the channel table and each link's subscriptions must agree;
// the ack is the batch's highest sequence number; every publish the
// broker accepts reaches each subscribed link once; when that link
// confirms deliveries (the fuzzer's bytes say whether) and is dropped
// without confirming, every such publish fails; a REPLACE from the same
// worker ("w") ends the second link, which takes no delivery after it;
// and dropping the links leaves no channel behind.
func FuzzApply(f *testing.F) {
	seed := func(ops ...*sccv1.Op) []byte {
		b, _ := proto.Marshal(&sccv1.LinkRequest{WorkerId: "w", Ops: ops})
		return b
	}
	f.Add(seed(&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_SUBSCRIBE, Channel: "a", Seq: 1},
		&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_PUBLISH, Channel: "a", Data: []byte(`"x"`), Seq: 2}), false)
	f.Add(seed(&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_SUBSCRIBE, Channel: "shared", Seq: 7},
		&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_UNSUBSCRIBE, Channel: "shared", Seq: 3},
		&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_PUBLISH, Channel: "shared", Epoch: 1, Seq: 9}), true)
	f.Add(seed(&sccv1.Op{Kind: 99, Channel: "", Seq: 5}, &sccv1.Op{Kind: sccv1.OpKind_OP_KIND_SYNC}), false)
	f.Add([]byte{0xff, 0x01, 0x02}, true)
	f.Add(seed(&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_PUBLISH, Channel: "shared", Seq: 1},
		&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_REPLACE, Seq: 2},
		&sccv1.Op{Kind: sccv1.OpKind_OP_KIND_PUBLISH, Channel: "shared", Seq: 3}), true)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, b []byte, ring bool) {
		var req sccv1.LinkRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		s := New(Config{Logger: quiet})
		if ring {
			s.SetRing("b1", 2, []string{"b1", "b2"}, nil)
		}
		var otherCut bool
		newLink := func(worker string, cut func()) *link {
			l := &link{worker: worker, subs: make(map[string]struct{}), signal: make(chan struct{}, 1), cut: cut}
			s.mu.Lock()
			s.links[l] = struct{}{}
			s.mu.Unlock()
			return l
		}
		other := newLink("w", func() { otherCut = true })
		other.confirms = req.Confirms
		s.apply(other, []*sccv1.Op{{Kind: sccv1.OpKind_OP_KIND_SUBSCRIBE, Channel: "shared", Seq: 1}})
		l := newLink(req.WorkerId, func() {})
		s.apply(l, req.Ops)
		// The ops before the first REPLACE reach "other", when both links
		// are w's; the rest do not.
		reach := len(req.Ops)
		if req.WorkerId == "w" {
			for i, op := range req.Ops {
				if op.Kind == sccv1.OpKind_OP_KIND_REPLACE {
					reach = i
					break
				}
			}
		}
		if replaced := reach < len(req.Ops); otherCut != replaced {
			t.Fatalf("other link cut: %v, want %v", otherCut, replaced)
		}

		// The table and the links agree.
		for ch, set := range s.channels {
			if len(set) == 0 {
				t.Fatalf("channel %q with no link", ch)
			}
			for x := range set {
				if _, ok := x.subs[ch]; !ok {
					t.Fatalf("channel %q lists a link not subscribed to it", ch)
				}
			}
		}
		for _, x := range []*link{l, other} {
			for ch := range x.subs {
				if _, ok := s.channels[ch][x]; !ok {
					t.Fatalf("link subscribed to %q missing from the table", ch)
				}
			}
		}
		// One ack, for the highest sequence number.
		var maxSeq uint64
		for _, op := range req.Ops {
			maxSeq = max(maxSeq, op.Seq)
		}
		switch {
		case maxSeq == 0 && len(l.acks) != 0:
			t.Fatalf("acks %v for a batch without sequence numbers", l.acks)
		case maxSeq != 0 && (len(l.acks) != 1 || l.acks[0].seq != maxSeq):
			t.Fatalf("acks %v, want one for %d", l.acks, maxSeq)
		}
		// Every publish to "shared" reached "other" once, unless the ring
		// (epoch 2: b1 and b2) gives "shared" to b2 and the publish was
		// routed by an older one; each of those was refused.
		r := ringpkg.New([]string{"b1", "b2"})
		want, refused := 0, 0
		for i, op := range req.Ops {
			if op.Kind != sccv1.OpKind_OP_KIND_PUBLISH {
				continue
			}
			if ring && op.Epoch < 2 && r.Owner(op.Channel) != "b1" {
				refused++
			} else if op.Channel == "shared" && i < reach {
				want++
			}
		}
		queued := want
		if otherCut {
			queued = 0 // what it had queued went with it (and fails below)
		}
		notOwner := 0
		for _, e := range l.failed {
			if e.NotOwner {
				notOwner++
			}
		}

		// (A batch without sequence numbers asks for no answer: its
		// refusals go unreported, as its ack does.)
		if maxSeq != 0 && notOwner != refused {
			t.Fatalf("%d publishes refused as not owned here, want %d", notOwner, refused)
		}
		if got := len(other.queue); got != queued {
			t.Fatalf("the other link holds %d deliveries of \"shared\", want %d", got, queued)
		}
		before := len(l.failed)
		s.drop(other)
		// A confirming link lost before confirming fails each publish
		// (with a sequence number) it was owed.
		unconfirmed := len(l.failed) - before
		owed := 0
		if other.confirms {
			for _, op := range req.Ops[:reach] {
				if op.Kind == sccv1.OpKind_OP_KIND_PUBLISH && op.Channel == "shared" && op.Seq != 0 &&
					!(ring && op.Epoch < 2 && r.Owner(op.Channel) != "b1") {
					owed++
				}
			}
		}
		if unconfirmed != owed {
			t.Fatalf("%d publishes failed when the subscriber's link was lost, want %d", unconfirmed, owed)
		}
		s.drop(l)
		if len(s.channels) != 0 || len(s.links) != 0 {
			t.Fatalf("after both links left: %d channels, %d links", len(s.channels), len(s.links))
		}
	})
}
