package cluster_test

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scc-k8s/scc/internal/clustertest"
	"github.com/scc-k8s/scc/internal/testutil"
	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/pkg/grpcx"
	"github.com/scc-k8s/scc/proto/sccv1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.Cleanup(func(code int) { testutil.Cleanup(); os.Exit(code) }))
}

func dial(t testing.TB, urls ...string) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), client.Options{URL: urls[0], URLs: urls[1:], ReconnectDelay: 20 * time.Millisecond, ReconnectMaxDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestPubSubAcrossWorkers(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 2, Workers: 2})
	a := dial(t, c.Workers[0].URL)
	b := dial(t, c.Workers[1].URL)
	got := make(chan string, 100)
	for i := 0; i < 20; i++ {
		if err := a.Subscribe(t.Context(), fmt.Sprint("ch", i), func(ch string, d json.RawMessage) { got <- ch + "=" + string(d) }); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		if err := b.Publish(t.Context(), fmt.Sprint("ch", i), i); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < 20 {
		select {
		case m := <-got:
			if seen[m] {
				t.Fatalf("duplicate %s", m)
			}
			seen[m] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of 20", len(seen))
		}
	}
	// Both brokers carry channels.
	for _, br := range c.Brokers {
		if br.Server().Channels() == 0 {
			t.Errorf("broker %s has no channels", br.ID())
		}
	}

	// Add a broker, then drain one: messages keep flowing.
	c.AddBroker()
	c.WaitStable(3)
	c.DrainBroker(c.Brokers[0])
	c.WaitStable(2)
	for i := 0; i < 20; i++ {
		if err := b.Publish(t.Context(), fmt.Sprint("ch", i), 100+i); err != nil {
			t.Fatal(err)
		}
	}
	for n := 0; n < 20; n++ {
		select {
		case m := <-got:
			if seen[m] {
				t.Fatalf("duplicate %s", m)
			}
			seen[m] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("after the ring changed, got %d of 20", n)
		}
	}
}

func TestClusterTokenRequired(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Brokers: 1, Workers: 1})
	for _, tok := range []string{"", "wrong"} {
		for name, addr := range map[string]string{"state": c.StateAddr, "broker": c.Brokers[0].Addr().String()} {
			conn, err := grpcx.Dial(addr, grpcx.Config{Token: tok})
			if err != nil {
				t.Fatal(err)
			}
			var rerr error
			if name == "state" {
				s, err := sccv1.NewStateClient(conn).Join(t.Context())
				if err == nil {
					_ = s.Send(&sccv1.JoinRequest{Msg: &sccv1.JoinRequest_Register{Register: &sccv1.Register{
						Member: &sccv1.Member{Id: "intruder", Role: sccv1.Role_ROLE_BROKER, Address: "127.0.0.1:1"}}}})
					_, rerr = s.Recv()
				} else {
					rerr = err
				}
			} else {
				s, err := sccv1.NewBrokerClient(conn).Link(t.Context())
				if err == nil {
					_ = s.Send(&sccv1.LinkRequest{WorkerId: "intruder", Ops: []*sccv1.Op{{Kind: sccv1.OpKind_OP_KIND_SUBSCRIBE, Channel: "x", Seq: 1}}})
					_, rerr = s.Recv()
				} else {
					rerr = err
				}
			}
			conn.Close()
			if status.Code(rerr) != codes.Unauthenticated {
				t.Errorf("%s with token %q: %v, want Unauthenticated", name, tok, rerr)
			}
		}
	}
	if v := c.State.Server().View(); len(v.Brokers) != 1 {
		t.Fatalf("intruder joined: %v", v)
	}
}
