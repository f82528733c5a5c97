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
