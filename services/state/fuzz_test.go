package state

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/scc-k8s/scc/proto/sccv1"
)

// fakeJoin is a member's Join stream that sends the given requests and
// then ends.
type fakeJoin struct {
	ctx     context.Context
	reqs    []*sccv1.JoinRequest
	sent    int
	maxLost atomic.Int64 // most lost links of a worker in a view sent
}

func (f *fakeJoin) Recv() (*sccv1.JoinRequest, error) {
	if len(f.reqs) == 0 {
		return nil, io.EOF
	}
	r := f.reqs[0]
	f.reqs = f.reqs[1:]
	return r, nil
}
func (f *fakeJoin) Send(v *sccv1.ClusterView) error {
	f.sent++
	for _, w := range v.Workers {
		if n := int64(len(w.LostLinks)); n > f.maxLost.Load() {
			f.maxLost.Store(n)
		}
	}
	return nil
}
func (f *fakeJoin) Context() context.Context     { return f.ctx }
func (f *fakeJoin) SetHeader(metadata.MD) error  { return nil }
func (f *fakeJoin) SendHeader(metadata.MD) error { return nil }
func (f *fakeJoin) SetTrailer(metadata.MD)       {}
func (f *fakeJoin) SendMsg(any) error            { return nil }
func (f *fakeJoin) RecvMsg(any) error            { return nil }

// FuzzJoin plays any sequence of messages a member could send on its Join
// stream (length-prefixed JoinRequests from the fuzzer's bytes) against
// state, after a broker and a worker have joined: nothing may panic, the
// epoch never goes back, and once the stream ends the member is gone and
// the others are still there; no member keeps more than maxLostLinks.
func FuzzJoin(f *testing.F) {
	enc := func(reqs ...*sccv1.JoinRequest) []byte {
		var out []byte
		for _, r := range reqs {
			b, _ := proto.Marshal(r)
			out = binary.AppendUvarint(out, uint64(len(b)))
			out = append(out, b...)
		}
		return out
	}
	reg := func(id string, role sccv1.Role, v *sccv1.View) *sccv1.JoinRequest {
		return &sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Register{Register: &sccv1.Register{
			Member: &sccv1.Member{Id: id, Role: role, Address: id + ":1"}, View: v}}}
	}
	f.Add(enc(reg("w9", sccv1.Role_ROLE_WORKER, nil),
		&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Heartbeat{Heartbeat: &sccv1.Heartbeat{Load: 5, Ready: true}}},
		&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Ack{Ack: &sccv1.Ack{Epoch: 1}}},
		&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Drain{Drain: &sccv1.Drain{}}}))
	f.Add(enc(reg("b9", sccv1.Role_ROLE_BROKER, &sccv1.View{Epoch: 1 << 62, Phase: 2,
		Brokers: []*sccv1.Member{{Id: "ghost"}}, PrevBrokers: []*sccv1.Member{{Id: "b1"}}})))
	f.Add(enc(reg("b1", sccv1.Role_ROLE_BROKER, nil))) // takes an existing member's id
	lost := func(load uint64, ll ...*sccv1.LostLink) *sccv1.JoinRequest {
		return &sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Heartbeat{Heartbeat: &sccv1.Heartbeat{Load: load, Ready: true, LostLinks: ll}}}
	}
	f.Add(enc(reg("w8", sccv1.Role_ROLE_WORKER, nil), lost(3, &sccv1.LostLink{BrokerId: "b1", Link: 7}),
		lost(0, &sccv1.LostLink{BrokerId: "b1", Link: 7}, &sccv1.LostLink{BrokerId: "nobody", Link: 1 << 63}), lost(2), lost(0)))
	many := make([]*sccv1.LostLink, 300)
	for i := range many {
		many[i] = &sccv1.LostLink{BrokerId: "b1", Link: uint64(i)}
	}
	f.Add(enc(reg("w7", sccv1.Role_ROLE_WORKER, nil), lost(1, many...)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var reqs []*sccv1.JoinRequest
		for len(b) > 0 {
			n, k := binary.Uvarint(b)
			if k <= 0 || n > uint64(len(b)-k) {
				break
			}
			var r sccv1.JoinRequest
			if proto.Unmarshal(b[k:k+int(n)], &r) != nil {
				return
			}
			reqs = append(reqs, &r)
			b = b[k+int(n):]
		}
		s := New(Config{Logger: quiet, SettleWindow: -1})
		defer s.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Two well-behaved members stay joined throughout.
		var watchers []*blockingJoin
		for _, r := range []*sccv1.JoinRequest{reg("b1", sccv1.Role_ROLE_BROKER, nil), reg("w1", sccv1.Role_ROLE_WORKER, nil)} {
			j := &blockingJoin{fakeJoin{ctx: ctx, reqs: []*sccv1.JoinRequest{r}}}
			watchers = append(watchers, j)
			go func() { _ = s.Join(j) }()
		}
		waitMembers(t, s, 2)
		before, _ := s.Epoch()
		_ = s.Join(&fakeJoin{ctx: ctx, reqs: reqs})
		after, _ := s.Epoch()
		if after < before {
			t.Fatalf("epoch went back: %d -> %d", before, after)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, w := range watchers {
			if n := w.maxLost.Load(); n > maxLostLinks {
				t.Fatalf("a view listed %d lost links of one worker", n)
			}
		}
		reg := reqs
		if len(reg) > 0 && reg[0].GetRegister() != nil {
			if id := reg[0].GetRegister().GetMember().GetId(); id != "b1" && id != "w1" && s.members[id] != nil {
				t.Fatalf("member %q still joined after its stream ended", id)
			}
		}
	})
}

// blockingJoin registers, then waits for the test to end.
type blockingJoin struct{ fakeJoin }

func (b *blockingJoin) Recv() (*sccv1.JoinRequest, error) {
	if len(b.reqs) > 0 {
		return b.fakeJoin.Recv()
	}
	<-b.ctx.Done()
	return nil, b.ctx.Err()
}

func waitMembers(t *testing.T, s *Server, n int) {
	for range 1000 {
		s.mu.Lock()
		k := len(s.members)
		s.mu.Unlock()
		if k >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d members did not join", n)
}
