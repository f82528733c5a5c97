// Command cfcheck runs the fan-out scenario against Centrifugo with its
// official Go client (centrifuge-go) instead of scc bench's adapter, so the
// adapter's figures can be checked against the peer's own client. It is a
// module of its own: the project does not depend on centrifuge-go.
//
//	taskset -c 0 centrifugo --config ~/.cache/scc-peers/centrifugo.json &
//	(cd bench/peers/cfcheck && go build) && taskset -c 1 bench/peers/cfcheck/cfcheck --pid $!
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// cpu is a process's CPU seconds from /proc.
func cpu(pid int) float64 {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

func main() {
	url := flag.String("url", "ws://127.0.0.1:18030/connection/websocket", "")
	pid := flag.Int("pid", 0, "")
	subs := flag.Int("subs", 1000, "")
	inflight := flag.Int("in-flight", 20, "")
	dur := flag.Duration("duration", 5*time.Second, "")
	flag.Parse()
	var delivered atomic.Int64
	for i := 0; i < *subs; i++ {
		c := centrifuge.NewJsonClient(*url, centrifuge.Config{})
		if err := c.Connect(); err != nil {
			panic(err)
		}
		s, err := c.NewSubscription("fanout")
		if err != nil {
			panic(err)
		}
		s.OnPublication(func(centrifuge.PublicationEvent) { delivered.Add(1) })
		if err := s.Subscribe(); err != nil {
			panic(err)
		}
	}
	time.Sleep(2 * time.Second)
	p := centrifuge.NewJsonClient(*url, centrifuge.Config{})
	if err := p.Connect(); err != nil {
		panic(err)
	}
	time.Sleep(500 * time.Millisecond)
	data := []byte(`"` + strings.Repeat("x", 62) + `"`)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var published atomic.Int64
	for range *inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := p.Publish(context.Background(), "fanout", data); err != nil {
					fmt.Println("publish:", err)
					return
				}
				published.Add(1)
			}
		}()
	}
	time.Sleep(time.Second) // warm-up
	d0, c0, t0 := delivered.Load(), cpu(*pid), time.Now()
	time.Sleep(*dur)
	d1, c1, t1 := delivered.Load(), cpu(*pid), time.Now()
	close(stop)
	wg.Wait()
	n := float64(d1 - d0)
	fmt.Printf("centrifuge-go fanout: %.0f delivered/s, server CPU %.2f s, %.0f per server CPU-second\n", n/t1.Sub(t0).Seconds(), c1-c0, n/(c1-c0))
}
