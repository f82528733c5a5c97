package worker_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/scc-k8s/scc/services/worker"
)

// A socket over MaxInboundRate is closed with 4429; one under it, and
// every other socket, is served on.
func TestMaxInboundRateClosesAFlood(t *testing.T) {
	srv := startServer(t, worker.Config{MaxInboundRate: 50}, nil)
	calm := srv.connect(t)
	flood := srv.connect(t)
	for i := 0; i < 200; i++ { // four seconds' worth at once
		// The server may close it before all are sent: stop writing then.
		if err := flood.Conn.WriteMessage(websocket.TextMessage, []byte(`{"event":"note","data":`+strconv.Itoa(i)+`}`)); err != nil {
			break
		}
	}
	flood.ExpectClose(worker.CloseTooManyMessages, 3*time.Second)
	// 40 invokes over a second stay under 50/s: all answered, still open.
	for i := 0; i < 40; i++ {
		calm.Send(`{"event":"#subscribe","data":{"channel":"c` + strconv.Itoa(i) + `"},"cid":` + strconv.Itoa(i+2) + `}`)
		r := calm.ExpectJSON()
		if r["rid"] != float64(i+2) {
			t.Fatalf("answer %v", r)
		}
		time.Sleep(25 * time.Millisecond)
	}
	calm.NoFrame(100 * time.Millisecond)
	fresh := srv.connect(t)
	fresh.Send(`{"event":"#subscribe","data":{"channel":"x"},"cid":2}`)
	if r := fresh.ExpectJSON(); r["rid"] != float64(2) {
		t.Fatalf("a fresh socket is not served: %v", r)
	}
}
