// Command rtt measures the round trip of one message through the
// baselines test/suites.d/bench.sh sets tbstream's latency against:
//
//	rtt -tcp                 TCP over loopback, TCP_NODELAY on both ends: the
//	                         message to an echo server (in this process) and back
//	rtt -file PATH           a loopback pipe device (test/vm/cmd/loopdev): the
//	                         message written to PATH and read back from it, one
//	                         FUSE WRITE and one FUSE READ
//
// with -size BYTES (default 4096), -rounds N measured after -warmup N. Every
// echo is compared with what was sent (each round's message differs). It
// prints one line, "rounds=N min_us=… p50_us=… p99_us=… max_us=…", and exits
// 1 on any error or wrong echo.
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"
)

func main() {
	useTCP := flag.Bool("tcp", false, "ping-pong over loopback TCP")
	path := flag.String("file", "", "write to and read back from this loopback device")
	size := flag.Int("size", 4096, "message size in bytes")
	rounds := flag.Int("rounds", 2000, "measured round trips")
	warmup := flag.Int("warmup", 200, "round trips before measuring")
	flag.Parse()
	if *useTCP == (*path != "") || *size < 8 || *rounds < 1 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "usage: rtt -tcp | -file PATH [-size BYTES] [-rounds N] [-warmup N]")
		os.Exit(2)
	}
	var rw io.ReadWriter
	if *useTCP {
		c, err := echoPair(*size)
		if err != nil {
			fail(err)
		}
		defer c.Close()
		rw = c
	} else {
		f, err := os.OpenFile(*path, os.O_RDWR, 0)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		rw = f
	}
	rtts, err := pingPong(rw, *size, *warmup, *rounds)
	if err != nil {
		fail(err)
	}
	slices.Sort(rtts)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	fmt.Printf("rounds=%d min_us=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f\n", len(rtts),
		us(rtts[0]), us(percentile(rtts, 50)), us(percentile(rtts, 99)), us(rtts[len(rtts)-1]))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rtt:", err)
	os.Exit(1)
}

// echoPair starts an echo server on a loopback port and returns a
// connection to it; both ends have TCP_NODELAY (Go's default, set anyway:
// it is what is being measured).
func echoPair(size int) (*net.TCPConn, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	go func() {
		defer ln.Close()
		s, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		defer s.Close()
		s.SetNoDelay(true)
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, fmt.Errorf("dial the echo server: %w", err)
	}
	if err := c.SetNoDelay(true); err != nil {
		return nil, fmt.Errorf("TCP_NODELAY: %w", err)
	}
	return c, nil
}

// pingPong writes a message and reads exactly as many bytes back, warmup
// plus rounds times, and returns the measured round trips.
func pingPong(rw io.ReadWriter, size, warmup, rounds int) ([]time.Duration, error) {
	out, in := make([]byte, size), make([]byte, size)
	rtts := make([]time.Duration, 0, rounds)
	for i := range warmup + rounds {
		// Each round's message differs, so that a stale echo is caught.
		for off := 0; off+8 <= size; off += 8 {
			binary.LittleEndian.PutUint64(out[off:], uint64(i)<<32|uint64(off))
		}
		t0 := time.Now()
		if _, err := rw.Write(out); err != nil {
			return nil, fmt.Errorf("round %d: write: %w", i, err)
		}
		if _, err := io.ReadFull(rw, in); err != nil {
			return nil, fmt.Errorf("round %d: read back: %w", i, err)
		}
		d := time.Since(t0)
		if !bytes.Equal(in, out) {
			return nil, fmt.Errorf("round %d: the echo differs from the message", i)
		}
		if i >= warmup {
			rtts = append(rtts, d)
		}
	}
	return rtts, nil
}

// percentile is the nearest-rank p-th percentile of sorted (as tbstream
// bench computes it).
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100
	return sorted[min(max(rank, 1), len(sorted))-1]
}
