package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestFlagsEnvTwins(t *testing.T) {
	t.Setenv("SCC_PING_INTERVAL", "2500")
	t.Setenv("SCC_ORIGINS", "example.com:*")
	t.Setenv("SCC_ALLOW_CLIENT_PUBLISH", "false")
	t.Setenv("SCC_SOCKET_CHANNEL_LIMIT", "7")
	f := newFlags("test")
	build := workerFlags(f, ":8000")
	if err := f.Parse([]string{"--protocol-version", "1", "--origins", "cli.example:80"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := build()
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Server
	if s.PingInterval != 2500*time.Millisecond || s.ProtocolVersion != 1 || s.Origins != "cli.example:80" ||
		!s.DisallowClientPublish || s.SocketChannelLimit != 7 || cfg.Listen != ":8000" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestFlagsBadEnv(t *testing.T) {
	t.Setenv("SCC_SOCKET_CHANNEL_LIMIT", "many")
	f := newFlags("test")
	workerFlags(f, ":8000")
	if err := f.Parse(nil); err == nil {
		t.Fatal("bad environment value accepted")
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"8000": 8 * time.Second, "1m": time.Minute, "250ms": 250 * time.Millisecond} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
}

// The cluster's commands refuse to start without a cluster token unless
// told --insecure; the standalone worker needs none.
func TestClusterTokenRequired(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // whatever starts stops at once
	for name, run := range map[string]func(context.Context, []string) error{
		"state": runState, "broker": runBroker, "worker": runWorker,
	} {
		args := []string{"--listen", "127.0.0.1:0", "--http-listen", "", "--state", "127.0.0.1:1"}
		if name == "worker" {
			args = []string{"--listen", "127.0.0.1:0", "--state", "127.0.0.1:1"}
		}
		if name == "state" {
			args = []string{"--listen", "127.0.0.1:0", "--http-listen", ""}
		}
		err := run(ctx, args)
		if err == nil || !strings.Contains(err.Error(), "--cluster-token") {
			t.Errorf("%s without a token: %v", name, err)
		}
	}
	if err := runState(ctx, []string{"--listen", "127.0.0.1:0", "--http-listen", "", "--insecure"}); err != nil && strings.Contains(err.Error(), "--cluster-token") {
		t.Errorf("state --insecure: %v", err)
	}
}
