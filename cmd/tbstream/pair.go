package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"tbstream/cmd/internal/daemon"
)

// pairDaemon runs host1 and host2 in this process, joined by an
// in-process cable (what up -cable inproc starts). Each host logs to its
// own run directory's log, as a daemon of its own would.
func pairDaemon(ctx context.Context, run string) error {
	var opts [2]daemon.Options
	for i, h := range demoHosts {
		dir := hostDir(run, h.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		o, err := daemon.ParseFlags("tbstream pair-daemon", daemonArgs(run, h.name, []string{"-adapter", h.adapter, "-peer-route", h.peerRoute})[1:])
		if err != nil {
			return err
		}
		logf, err := os.OpenFile(hostDir(run, h.name)+"/log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		defer logf.Close()
		o.Logger = slog.New(slog.NewTextHandler(logf, nil))
		opts[i] = o
	}
	if err := daemon.RunPair(ctx, opts[0], opts[1]); err != nil {
		return fmt.Errorf("pair-daemon: %w", err)
	}
	return nil
}
