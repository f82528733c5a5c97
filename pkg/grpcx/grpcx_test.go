package grpcx

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "scc-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
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
	cert, key := selfSigned(t)
	srv := Config{Token: "s3cret", TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: cert}
	addr := serve(t, srv)
	if err := check(t, addr, Config{Token: "s3cret", TLSCAFile: cert}); err != nil {
		t.Fatalf("TLS with the right token: %v", err)
	}
	if err := check(t, addr, Config{Token: "wrong", TLSCAFile: cert}); status.Code(err) != codes.Unauthenticated {
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
	cert, key := selfSigned(t)
	addr := serve(t, Config{Token: "s3cret", TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: cert, RequireClientCert: true})
	if err := check(t, addr, Config{Token: "s3cret", TLSCAFile: cert}); status.Code(err) != codes.Unavailable {
		t.Fatalf("no client certificate: %v", err)
	}
	if err := check(t, addr, Config{Token: "s3cret", TLSCAFile: cert, TLSCertFile: cert, TLSKeyFile: key}); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if _, err := ServerOptions(Config{TLSCertFile: cert, TLSKeyFile: key, RequireClientCert: true}); err == nil {
		t.Fatal("client certificates required without a CA to verify them")
	}
}
