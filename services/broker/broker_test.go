package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/scc-k8s/scc/proto/sccv1"
	"github.com/scc-k8s/scc/services/broker"
)

// serve starts a broker; the returned function dials a new connection
// per call, as each worker has its own.
func serve(t *testing.T, cfg broker.Config) (*broker.Server, func() sccv1.BrokerClient) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := broker.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	sccv1.RegisterBrokerServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return srv, func() sccv1.BrokerClient {
		// Fixed flow-control windows (no BDP growth) so a stream that is
		// not read backs up into the broker within a few hundred kilobytes.
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return sccv1.NewBrokerClient(conn)
	}
}

func link(t *testing.T, dial func() sccv1.BrokerClient, id string) sccv1.Broker_LinkClient {
	t.Helper()
	c := dial()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	l, err := c.Link(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Send(&sccv1.LinkRequest{WorkerId: id}); err != nil {
		t.Fatal(err)
	}
	return l
}

func op(kind sccv1.OpKind, ch, data string, seq uint64) *sccv1.Op {
	return &sccv1.Op{Kind: kind, Channel: ch, Data: []byte(data), Seq: seq}
}

func TestRouteAndAck(t *testing.T) {
	srv, c := serve(t, broker.Config{})
	a, b := link(t, c, "a"), link(t, c, "b")
	_ = a.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_SUBSCRIBE, "x", "", 1), op(sccv1.OpKind_OP_KIND_SUBSCRIBE, "y", "", 2)}})
	if r, err := a.Recv(); err != nil || r.Acked != 2 {
		t.Fatalf("subscribe ack: %v %v", r, err)
	}
	_ = b.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_PUBLISH, "x", "1", 1), op(sccv1.OpKind_OP_KIND_PUBLISH, "z", "2", 2)}})
	if r, err := b.Recv(); err != nil || r.Acked != 2 || len(r.Deliveries) != 0 {
		t.Fatalf("publish ack: %v %v", r, err)
	}
	r, err := a.Recv()
	if err != nil || len(r.Deliveries) != 1 || r.Deliveries[0].Channel != "x" || string(r.Deliveries[0].Data) != "1" {
		t.Fatalf("delivery: %v %v", r, err)
	}
	if srv.Channels() != 2 || srv.Links() != 2 {
		t.Fatalf("%d channels, %d links", srv.Channels(), srv.Links())
	}
	_ = a.CloseSend()
	deadline := time.Now().Add(3 * time.Second)
	for srv.Channels() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a closed link's subscriptions stayed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSlowLinkIsCut(t *testing.T) {
	srv, c := serve(t, broker.Config{MaxLinkQueueBytes: 1 << 20})
	slow, good, pub := link(t, c, "slow"), link(t, c, "good"), link(t, c, "pub")
	for _, l := range []sccv1.Broker_LinkClient{slow, good} {
		_ = l.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_SUBSCRIBE, "fire", "", 1)}})
	}
	if _, err := good.Recv(); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("p", 1000)
	received := make(chan int, 1)
	var count atomic.Int64
	go func() {
		n := 0
		for n < 8000 {
			r, err := good.Recv()
			if err != nil {
				break
			}
			n += len(r.Deliveries)
			count.Store(int64(n))
		}
		received <- n
	}()
	for i := 0; i < 80; i++ { // 8 MB: far past the slow link's 1 MB
		ops := make([]*sccv1.Op, 100)
		for j := range ops {
			ops[j] = op(sccv1.OpKind_OP_KIND_PUBLISH, "fire", payload, uint64(i*100+j+1))
		}
		if err := pub.Send(&sccv1.LinkRequest{Ops: ops}); err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Recv(); err != nil {
			t.Fatal(err)
		}
		// Pace the publisher to the good link, whose queue then stays far
		// below the limit; only the link that never reads passes it.
		for deadline := time.Now().Add(5 * time.Second); count.Load() < int64((i+1)*100) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	if n := <-received; n != 8000 {
		t.Fatalf("good link got %d of 8000", n)
	}
	// The slow link was cut: draining it ends with ResourceExhausted.
	for {
		_, err := slow.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("slow link ended with %v", err)
			}
			break
		}
	}
	if srv.Links() != 2 {
		t.Fatalf("%d links left", srv.Links())
	}
}

// recvAck reads responses until one carries an ack (heartbeats and
// deliveries are skipped), or fails the test after within.
func recvAck(t *testing.T, l sccv1.Broker_LinkClient, within time.Duration) *sccv1.LinkResponse {
	t.Helper()
	got := make(chan *sccv1.LinkResponse, 1)
	go func() {
		for {
			r, err := l.Recv()
			if err != nil {
				close(got)
				return
			}
			if r.Acked != 0 {
				got <- r
				return
			}
		}
	}()
	select {
	case r, ok := <-got:
		if !ok {
			t.Fatal("link ended before an ack")
		}
		return r
	case <-time.After(within):
		t.Fatalf("no ack within %v", within)
		return nil
	}
}

// A publish's ack waits until the confirming worker it was delivered to
// has counted it; when that worker's link ends first, the publish fails
// (and a later publish, to a channel nobody has, is acked behind it).
func TestAckWaitsForConfirmation(t *testing.T) {
	_, c := serve(t, broker.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := c().Link(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.Send(&sccv1.LinkRequest{WorkerId: "sub", Confirms: true,
		Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_SUBSCRIBE, "x", "", 1)}})
	if r, err := sub.Recv(); err != nil || r.Acked != 1 {
		t.Fatalf("subscribe ack: %v %v", r, err)
	}
	pub := link(t, c, "pub")

	_ = pub.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_PUBLISH, "x", "1", 1)}})
	if r, err := sub.Recv(); err != nil || len(r.Deliveries) != 1 {
		t.Fatalf("delivery: %v %v", r, err)
	}
	acks := make(chan *sccv1.LinkResponse, 1)
	go func() { acks <- recvAck(t, pub, 10*time.Second) }()
	select {
	case r := <-acks:
		t.Fatalf("acked before the subscriber's worker confirmed: %v", r)
	case <-time.After(300 * time.Millisecond):
	}
	_ = sub.Send(&sccv1.LinkRequest{Received: 1})
	if r := <-acks; r.Acked != 1 || len(r.Failed) != 0 {
		t.Fatalf("after the confirmation: %v", r)
	}

	// Delivered, never confirmed, then the subscriber's link is lost.
	_ = pub.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_PUBLISH, "x", "2", 2)}})
	_ = pub.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_PUBLISH, "nobody", "3", 3)}})
	if r, err := sub.Recv(); err != nil || len(r.Deliveries) != 1 {
		t.Fatalf("delivery: %v %v", r, err)
	}
	go func() { acks <- recvAck(t, pub, 10*time.Second) }()
	select {
	case r := <-acks:
		t.Fatalf("acked with the subscriber's worker silent: %v", r)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	r := <-acks
	if r.Acked != 3 || len(r.Failed) != 1 || r.Failed[0].Seq != 2 || !strings.Contains(r.Failed[0].Message, "confirmed") {
		t.Fatalf("after the subscriber's link ended: %v", r)
	}
}

// A worker that confirms nothing cannot hold what the broker keeps for it
// past the queue limit: its link is cut and the publishes fail.
func TestUnconfirmedBounded(t *testing.T) {
	srv, c := serve(t, broker.Config{MaxLinkQueueBytes: 64 << 10})
	sub, err := c().Link(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.Send(&sccv1.LinkRequest{WorkerId: "sub", Confirms: true,
		Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_SUBSCRIBE, "x", "", 1)}})
	// Subscribed before the first publish (a CI run saw the first ones
	// reach a channel nobody was subscribed to yet, and acked).
	if r, err := sub.Recv(); err != nil || r.Acked != 1 {
		t.Fatalf("subscribe ack: %v %v", r, err)
	}
	go func() { // reads everything, confirms nothing
		for {
			if _, err := sub.Recv(); err != nil {
				return
			}
		}
	}()
	pub := link(t, c, "pub")
	payload := strings.Repeat("p", 1000)
	for i := uint64(1); i <= 100; i++ { // 100 KB: past the 64 KB limit
		_ = pub.Send(&sccv1.LinkRequest{Ops: []*sccv1.Op{op(sccv1.OpKind_OP_KIND_PUBLISH, "x", payload, i)}})
	}
	failed := map[uint64]bool{}
	var acked uint64
	for acked < 100 {
		r := recvAck(t, pub, 10*time.Second)
		acked = r.Acked
		for _, f := range r.Failed {
			failed[f.Seq] = true
		}
	}
	// Every publish failed: none was confirmed, and the link was cut
	// (those after the cut were not delivered to it, and are acked).
	cut := 0
	for i := uint64(1); i <= 100 && failed[i]; i++ {
		cut++
	}
	if cut < 60 || cut > 70 || len(failed) != cut {
		t.Fatalf("%d publishes failed (%d in a row from the first), want the ~65 within the limit", len(failed), cut)
	}
	if srv.Links() != 1 {
		t.Fatalf("%d links, want the publisher's only", srv.Links())
	}
}
