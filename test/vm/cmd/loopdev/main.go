// Command loopdev serves loopback pipes (package cuse/loopback) as
// character devices: through CUSE (/dev/NAME), or with -fuse DIR as files
// of a FUSE mount (the fallback for kernels without CUSE). The VM suite
// runs it inside the guest; the fallback benchmark runs it on the host.
//
//	loopdev [-size BYTES] [-stats FILE] [-fuse DIR] NAME[:MODE][:null] ...
//
// A device marked null is a sink and a zero source instead of a pipe (like
// /dev/null for writes and /dev/zero for reads), for measuring the server
// alone.
//
// SIGTERM or SIGINT stop it (the nodes disappear); SIGUSR1 writes the CUSE
// servers' counters to -stats.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"tbstream/cuse"
	"tbstream/cuse/loopback"
)

func main() {
	size := flag.Int("size", loopback.DefaultSize, "pipe capacity in bytes")
	statsFile := flag.String("stats", "", "file SIGUSR1 writes counters to")
	fuseDir := flag.String("fuse", "", "serve as files of a FUSE mount on this directory instead of CUSE")
	debug := flag.Bool("debug", false, "log every request")
	flag.Parse()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: loopdev [-size BYTES] [-stats FILE] [-fuse DIR] NAME[:MODE] ...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	type spec struct {
		name string
		mode os.FileMode
		null bool
	}
	var specs []spec
	for _, arg := range flag.Args() {
		name, modeStr, _ := strings.Cut(arg, ":")
		modeStr, kind, _ := strings.Cut(modeStr, ":")
		var mode uint64
		if modeStr != "" {
			var err error
			if mode, err = strconv.ParseUint(modeStr, 8, 32); err != nil {
				log.Error("bad mode", "arg", arg)
				os.Exit(2)
			}
		}
		specs = append(specs, spec{name, os.FileMode(mode), kind == "null"})
	}

	device := func(s spec) cuse.Device {
		if s.null {
			return nullDevice{zeros: make([]byte, cuse.DefaultMaxIO)}
		}
		return loopback.New(*size)
	}
	if *fuseDir != "" {
		dir, err := cuse.MountDir(*fuseDir, cuse.DirOptions{Logger: log, Debug: *debug})
		if err != nil {
			log.Error("mount", "err", err)
			os.Exit(1)
		}
		for _, s := range specs {
			if err := dir.Add(s.name, cuse.File{Device: device(s), Mode: s.mode}); err != nil {
				log.Error("add", "err", err)
				os.Exit(1)
			}
		}
		log.Info("serving", "dir", *fuseDir, "files", len(specs))
		<-ctx.Done()
		if err := dir.Unmount(); err != nil {
			log.Error("unmount", "err", err)
			os.Exit(1)
		}
		return
	}

	var servers []*cuse.Server
	for _, s := range specs {
		srv, err := cuse.Open(device(s), cuse.Options{Name: s.name, Logger: log, Debug: *debug,
			Node: cuse.NodeOptions{Mode: s.mode}})
		if err == nil {
			err = srv.Init(ctx)
		}
		if err != nil {
			log.Error("register", "name", s.name, "err", err)
			os.Exit(1)
		}
		servers = append(servers, srv)
	}
	log.Info("serving", "devices", len(servers))

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			var b strings.Builder
			for i, srv := range servers {
				st := srv.Stats()
				fmt.Fprintf(&b, "%s reads=%d writes=%d polls=%d notifies=%d again=%d interrupts=%d interrupt_retry=%d stale=%d refused=%d unknown=%d malformed=%d\n",
					specs[i].name, st.Reads.Load(), st.Writes.Load(), st.Polls.Load(), st.Notifies.Load(), st.Again.Load(),
					st.Interrupts.Load(), st.InterruptRetry.Load(), st.Stale.Load(), st.Refused.Load(), st.Unknown.Load(), st.Malformed.Load())
			}
			if *statsFile != "" {
				os.WriteFile(*statsFile, []byte(b.String()), 0o644)
			}
		}
	}()

	var wg sync.WaitGroup
	failed := false
	var mu sync.Mutex
	for _, srv := range servers {
		wg.Go(func() {
			if err := srv.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("serve", "err", err)
				mu.Lock()
				failed = true
				mu.Unlock()
				stop()
			}
		})
	}
	wg.Wait()
	if failed {
		os.Exit(1)
	}
}

// nullDevice discards writes and reads zeros, never blocking.
type nullDevice struct{ zeros []byte }

func (d nullDevice) Open(context.Context, *cuse.OpenRequest) (cuse.Handle, error) { return d, nil }

func (d nullDevice) Read(_ context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	return cuse.ReadResult{Data: [][]byte{d.zeros[:min(req.Size, len(d.zeros))]}}, nil
}

func (d nullDevice) Write(_ context.Context, req *cuse.WriteRequest) (int, error) {
	return req.Len(), nil
}

func (d nullDevice) Poll(_ context.Context, req *cuse.PollRequest) (uint32, error) {
	return (cuse.EventIn | cuse.EventOut) & req.Events, nil
}

func (d nullDevice) Release(context.Context) {}
