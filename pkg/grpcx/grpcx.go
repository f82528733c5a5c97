// Package grpcx builds the gRPC servers and connections the cluster's
// components use: a shared cluster token checked on every call (and sent on
// every call), optional TLS, keepalives that notice a dead peer in seconds.
package grpcx

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Config is what every component shares to talk to the others.
type Config struct {
	// Token is the cluster token. When set, servers refuse calls without it
	// (codes.Unauthenticated) and clients send it. Empty disables the check.
	Token string
	// TLSCertFile and TLSKeyFile enable TLS on servers (and are presented
	// by clients, for mTLS). TLSCAFile verifies the peer; with TLS on and no
	// CA file, the system roots are used.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// TLSServerName overrides the name clients verify.
	TLSServerName string
	// RequireClientCert makes servers refuse a connection whose client
	// presents no certificate signed by TLSCAFile (mutual TLS). Default
	// false: a certificate, when given, is verified.
	RequireClientCert bool
	// Dialer, when set, makes the connections Dial uses (tests inject
	// faults with it). Default: a plain TCP dial.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

func (c Config) tls() bool { return c.TLSCertFile != "" || c.TLSCAFile != "" }

// ErrUnauthenticated is what a call without the right token gets.
var ErrUnauthenticated = status.Error(codes.Unauthenticated, "grpcx: missing or wrong cluster token")

func (c Config) check(ctx context.Context) error {
	if c.Token == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(tok), []byte(c.Token)) == 1 {
			return nil
		}
	}
	return ErrUnauthenticated
}

// Message sizes between components. Batches of operations and deliveries
// are cut at MaxBatchBytes; one gRPC message may be MaxMessageBytes at most
// on either side (both limits are set by ServerOptions and Dial), so a
// single operation may carry up to MaxMessageBytes-MessageOverhead bytes
// of payload and anything bigger is refused before it is sent.
const (
	MaxBatchBytes   = 1 << 20
	MaxMessageBytes = 64 << 20
	MessageOverhead = 64 << 10
)

// ServerOptions returns the options for a component's gRPC server.
func ServerOptions(c Config) ([]grpc.ServerOption, error) {
	opts := []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			if err := c.check(ctx); err != nil {
				return nil, err
			}
			err = Guard(info.FullMethod, func() error {
				var herr error
				resp, herr = h(ctx, req)
				return herr
			})
			return resp, err
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := c.check(ss.Context()); err != nil {
				return err
			}
			return Guard(info.FullMethod, func() error { return h(srv, ss) })
		}),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 5 * time.Second, Timeout: 5 * time.Second}),
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("grpcx: server certificate: %w", err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if c.TLSCAFile != "" {
			pool, err := loadPool(c.TLSCAFile)
			if err != nil {
				return nil, err
			}
			tc.ClientCAs = pool
			tc.ClientAuth = tls.VerifyClientCertIfGiven
			if c.RequireClientCert {
				tc.ClientAuth = tls.RequireAndVerifyClientCert
			}
		} else if c.RequireClientCert {
			return nil, errors.New("grpcx: requiring client certificates needs a CA file to verify them")
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	return opts, nil
}

type tokenCreds struct {
	token  string
	secure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}
func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }

// Dial connects to a component at addr (connections are lazy: a peer that
// is down makes calls fail or wait, not Dial).
func Dial(addr string, c Config) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Reconnect fast: a restarted state or broker is back within a
		// settle window, not after gRPC's default 1 s+ backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes)),
	}
	if c.tls() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
		if c.TLSCAFile != "" {
			pool, err := loadPool(c.TLSCAFile)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = pool
		}
		if c.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("grpcx: client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: c.Token, secure: c.tls()}))
	}
	if c.Dialer != nil {
		opts = append(opts, grpc.WithContextDialer(c.Dialer))
	}
	return grpc.NewClient(addr, opts...)
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("grpcx: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("grpcx: CA file has no certificates")
	}
	return pool, nil
}

// Panics counts the panics Guard recovered; tests and metrics read it.
var Panics atomic.Int64

// Guard runs fn and turns a panic in it into a codes.Internal error, logged
// (slog's default logger) with its stack: a handler's bug, or one a peer
// provokes, ends that call or stream, never the process. Every gRPC
// handler runs under it (ServerOptions); goroutines a handler starts call
// it themselves.
func Guard(what string, fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			Panics.Add(1)
			slog.Error("recovered from a panic", "where", what, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "grpcx: %s: internal error", what)
		}
	}()
	return fn()
}
