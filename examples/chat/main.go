// Command chat is a custom worker written with the worker package, the way
// SocketCluster users wrote worker.js: a login procedure that issues a JWT,
// middleware that keeps "private:" channels to authenticated users and
// stamps every chat message with its sender, a receiver, and a server-side
// exchange subscription that answers on a bot channel.
//
//	go run ./examples/chat --listen :8000 --auth-key secret
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"os/signal"
	"strings"
	"syscall"

	"github.com/scc-k8s/scc/pkg/auth"
	"github.com/scc-k8s/scc/pkg/codec"
	"github.com/scc-k8s/scc/services/worker"
	"github.com/scc-k8s/scc/services/worker/demo"
)

func main() {
	listen := flag.String("listen", ":8000", "address to serve on")
	key := flag.String("auth-key", "change-me", "JWT HMAC secret")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	err := worker.Run(ctx, worker.ServiceConfig{
		Listen: *listen,
		Server: worker.Config{Auth: auth.Config{Key: []byte(*key)}},
		Extra:  demo.Handler(),
		Setup:  setup,
	})
	if err != nil {
		log.Fatal(err)
	}
}

func setup(srv *worker.Server) {
	// RPC with an acknowledgement: the client calls socket.invoke('login', {username}).
	srv.HandleProcedure("login", func(r *worker.Request) (any, error) {
		var in struct {
			Username string `json:"username"`
		}
		if err := r.Decode(&in); err != nil || in.Username == "" {
			return nil, codec.NewError("LoginError", "username required")
		}
		return map[string]string{"welcome": in.Username}, r.Socket.SetAuthToken(map[string]any{"username": in.Username})
	})

	// A transmit receiver: socket.transmit('typing', channel).
	srv.HandleReceiver("typing", func(s *worker.Socket, data json.RawMessage) {
		if ch, ok := codec.String(data); ok {
			_ = srv.Exchange().Publish(s.Context(), ch+":typing", map[string]string{"id": s.ID()})
		}
	})

	// Inbound middleware: access control and message stamping.
	srv.UseInbound(func(a *worker.Action) error {
		switch a.Type {
		case worker.ActionSubscribe, worker.ActionPublishIn:
			if strings.HasPrefix(a.Channel, "private:") && !a.Socket.IsAuthenticated() {
				return codec.NewError("ForbiddenError", "log in to use "+a.Channel)
			}
		}
		if a.Type == worker.ActionPublishIn {
			name := "anonymous"
			if tok := a.Socket.AuthToken(); tok != nil {
				name, _ = tok["username"].(string)
			}
			var msg map[string]any
			if json.Unmarshal(a.Data, &msg) == nil && msg != nil {
				msg["from"] = name
				a.Data, _ = json.Marshal(msg)
			}
		}
		return nil
	})

	// A server-side subscriber: the bot answers on "bot".
	go func() {
		_, err := srv.Exchange().Subscribe(context.Background(), "bot", func(_ string, data json.RawMessage) {
			var msg struct {
				Text string `json:"text"`
				From string `json:"from"`
			}
			if json.Unmarshal(data, &msg) == nil && msg.From != "bot" && strings.HasPrefix(msg.Text, "!ping") {
				srv.Exchange().PublishAsync("bot", json.RawMessage(`{"from":"bot","text":"pong"}`), nil)
			}
		})
		if err != nil {
			log.Print(err)
		}
	}()
}
