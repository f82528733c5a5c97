package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkFanout measures one channel message delivered to n local
// subscribers over real loopback connections (the subscribers drain as
// fast as they can): the cost per publish on the server, with allocs/op.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n, "subscribers"), func(b *testing.B) {
			srv, err := NewServer(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxPendingBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			defer srv.Close()
			url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/socketcluster/"
			var got atomic.Int64
			for i := 0; i < n; i++ {
				c, _, err := websocket.DefaultDialer.Dial(url, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				_ = c.WriteMessage(websocket.TextMessage, []byte(`[{"event":"#handshake","data":{},"cid":1},{"event":"#subscribe","data":{"channel":"bench"},"cid":2}]`))
				go func() { // reads into one reused buffer: no allocations of its own
					var buf bytes.Buffer
					marker := []byte(`"#publish"`)
					for {
						_, r, err := c.NextReader()
						if err != nil {
							return
						}
						buf.Reset()
						if _, err := buf.ReadFrom(r); err != nil {
							return
						}
						got.Add(int64(bytes.Count(buf.Bytes(), marker)))
					}
				}()
			}
			deadline := time.Now().Add(10 * time.Second)
			for srv.hub.channelCount() != 1 || subscribers(srv, "bench") != n {
				if time.Now().After(deadline) {
					b.Fatal("subscribers not ready")
				}
				time.Sleep(time.Millisecond)
			}
			data := json.RawMessage(`"` + strings.Repeat("x", 62) + `"`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				srv.deliver("bench", data)
			}
			want := int64(b.N) * int64(n)
			for got.Load() < want && time.Now().Before(deadline.Add(time.Minute)) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

func subscribers(srv *Server, ch string) int {
	sh := srv.hub.shard(ch)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if e := sh.channels[ch]; e != nil && e.active {
		return len(e.socks)
	}
	return 0
}
