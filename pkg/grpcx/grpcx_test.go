package grpcx

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/scc-k8s/scc/internal/testutil"
)

// selfSigned returns a certificate for 127.0.0.1 and its key, and the CA
// that signed it.
func selfSigned(t *testing.T) (certFile, keyFile, caFile string) {
	f := testutil.NewTLSFiles(t)
	return f.CertFile, f.KeyFile, f.CAFile
}

func serve(t *testing.T, cfg Config) string {
	t.Helper()
	opts, err := ServerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func check(t *testing.T, addr string, cfg Config) error {
	t.Helper()
	conn, err := Dial(addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestTokenAndTLS(t *testing.T) {
	cert, key, ca := selfSigned(t)
	srv := Config{Token: "s3cret", TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca}
	addr := serve(t, srv)
	if err := check(t, addr, Config{Token: "s3cret", TLSCAFile: ca}); err != nil {
		t.Fatalf("TLS with the right token: %v", err)
	}
	if err := check(t, addr, Config{Token: "wrong", TLSCAFile: ca}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong token: %v", err)
	}
	if err := check(t, addr, Config{Token: "s3cret"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext to a TLS server: %v", err)
	}
	plain := serve(t, Config{Token: "s3cret"})
	if err := check(t, plain, Config{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	if err := check(t, plain, Config{Token: "s3cret"}); err != nil {
		t.Fatalf("plaintext with token: %v", err)
	}
}

// panicky is a health server whose Check panics on demand.
type panicky struct {
	healthpb.UnimplementedHealthServer
}

func (panicky) Check(_ context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if r.Service == "boom" {
		panic("boom")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (panicky) Watch(*healthpb.HealthCheckRequest, healthpb.Health_WatchServer) error {
	panic("stream boom")
}

// A panicking handler fails its call with codes.Internal; the server keeps
// serving.
func TestHandlerPanicsRecovered(t *testing.T) {
	opts, _ := ServerOptions(Config{})
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, panicky{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := Dial(ln.Addr().String(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	before := Panics.Load()
	if _, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "boom"}); status.Code(err) != codes.Internal {
		t.Fatalf("panicking call: %v", err)
	}
	w, err := c.Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Internal {
		t.Fatalf("panicking stream: %v", err)
	}
	if _, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("after the panics: %v", err)
	}
	if n := Panics.Load() - before; n != 2 {
		t.Fatalf("%d panics counted, want 2", n)
	}
}

// With RequireClientCert a server refuses a client that presents no
// certificate, even with the right token; one that presents a certificate
// signed by the CA gets in.
func TestMutualTLS(t *testing.T) {
	cert, key, ca := selfSigned(t)
	addr := serve(t, Config{Token: "s3cret", TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca, RequireClientCert: true})
	if err := check(t, addr, Config{Token: "s3cret", TLSCAFile: ca}); status.Code(err) != codes.Unavailable {
		t.Fatalf("no client certificate: %v", err)
	}
	if err := check(t, addr, Config{Token: "s3cret", TLSCAFile: ca, TLSCertFile: cert, TLSKeyFile: key}); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if _, err := ServerOptions(Config{TLSCertFile: cert, TLSKeyFile: key, RequireClientCert: true}); err == nil {
		t.Fatal("client certificates required without a CA to verify them")
	}
}
