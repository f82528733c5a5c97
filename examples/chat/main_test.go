package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/scc-k8s/scc/pkg/client"
	"github.com/scc-k8s/scc/pkg/codec"
	"github.com/scc-k8s/scc/services/worker"
)

func TestChatExample(t *testing.T) {
	srv, err := worker.NewServer(worker.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	setup(srv)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	ctx := t.Context()
	c, err := client.Dial(ctx, client.Options{URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 4)
	err = c.Subscribe(ctx, "private:room", func(string, json.RawMessage) {})
	if ce, ok := err.(*codec.Error); !ok || ce.Name != "ForbiddenError" {
		t.Fatalf("anonymous subscribe to a private channel: %v", err)
	}
	if _, err := c.Invoke(ctx, "login", map[string]string{"username": "zoe"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, "private:room", func(_ string, d json.RawMessage) { got <- string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "private:room", map[string]string{"text": "hi"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != `{"from":"zoe","text":"hi"}` {
			t.Fatalf("got %s", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no message")
	}
	// The bot subscribes in the background: wait for its channel.
	for deadline := time.Now().Add(3 * time.Second); srv.ChannelCount() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bot never subscribed")
		}
	}
	if err := c.Subscribe(ctx, "bot", func(_ string, d json.RawMessage) { got <- string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "bot", map[string]string{"text": "!ping"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"from":"zoe","text":"!ping"}`, `{"from":"bot","text":"pong"}`} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("got %s, want %s", m, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("no %s", want)
		}
	}
}
