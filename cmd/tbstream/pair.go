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
// own run directory's log, as a daemon of its own would, and
// logInherited tells each log what descriptors the process closed at
// start. Run directories others could write are refused, and a log that
// is a symlink is not followed (daemon.MakeRunDir, daemon.OpenIn).
func pairDaemon(ctx context.Context, run string, logInherited func(*slog.Logger)) error {
	var opts [2]daemon.Options
	for i, h := range demoHosts {
		o, err := daemon.ParseFlags("tbstream pair-daemon", daemonArgs(run, h.name, []string{"-adapter", h.adapter, "-peer-route", h.peerRoute})[1:])
		if err != nil {
			return err
		}
		logf, err := openHostLog(run, h.name)
		if err != nil {
			return err
		}
		defer logf.Close()
		o.Logger = slog.New(slog.NewTextHandler(logf, nil))
		logInherited(o.Logger)
		opts[i] = o
	}
	if err := daemon.RunPair(ctx, opts[0], opts[1]); err != nil {
		return fmt.Errorf("pair-daemon: %w", err)
	}
	return nil
}

// openHostLog opens host's log for appending (mode 0640: it holds peers'
// names and paths, not for every local user), making the run root and
// the host's run directory if missing. Both must be safe run directories
// and the log a regular file, not a symlink (daemon.OpenIn).
func openHostLog(run, host string) (*os.File, error) {
	dir, err := makeHostDir(run, host)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	logf, err := daemon.OpenIn(dir, "log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if err := logf.Chmod(0o640); err != nil {
		logf.Close()
		return nil, err
	}
	return logf, nil
}
