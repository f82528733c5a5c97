// Command floor measures what a loopback write costs on this machine, the
// floor under every fan-out number: a server writes size-byte messages
// round-robin to n sockets as fast as it can, from one goroutine, while a
// client reads and discards them. Run the two halves on different cores:
//
//	taskset -c 0 floor -size 2000 -json floor.json & taskset -c 1 floor -client
//
// The server prints (and writes as JSON) its CPU microseconds per write.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"syscall"
	"time"
)

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18099", "address the server listens on")
	n := flag.Int("conns", 1000, "sockets")
	size := flag.Int("size", 2000, "bytes per write")
	dur := flag.Duration("duration", 3*time.Second, "how long the server writes")
	client := flag.Bool("client", false, "be the reading side")
	out := flag.String("json", "", "file for the server's result")
	flag.Parse()
	if *client {
		for i := 0; i < *n; i++ {
			var c net.Conn
			var err error
			for try := 0; try < 50; try++ { // the server may still be starting
				if c, err = net.Dial("tcp", *addr); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				log.Fatal(err)
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
		time.Sleep(*dur + 2*time.Second)
		return
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	conns := make([]net.Conn, 0, *n)
	for len(conns) < *n {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		conns = append(conns, c)
	}
	buf := make([]byte, *size)
	start, cpu0, writes := time.Now(), cpuSeconds(), 0
	for time.Since(start) < *dur {
		for _, c := range conns {
			if _, err := c.Write(buf); err != nil {
				log.Fatal(err)
			}
			writes++
		}
	}
	cpu := cpuSeconds() - cpu0
	res := map[string]float64{"bytes_per_write": float64(*size), "conns": float64(*n),
		"writes_per_second": float64(writes) / time.Since(start).Seconds(), "cpu_us_per_write": cpu / float64(writes) * 1e6}
	fmt.Printf("%d-byte writes to %d sockets: %.0f writes/s, %.2f us CPU per write\n", *size, *n, res["writes_per_second"], res["cpu_us_per_write"])
	if *out != "" {
		b, _ := json.Marshal(res)
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
