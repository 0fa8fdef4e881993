package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tbstream/cmd/internal/daemon"
)

// The two emulated hosts of the documentation: host2 sees host1 at route 1
// (0-1), host1 sees host2 at route 503 (0-503). host2 listens for the
// cable on a unix socket, host1 plugs into it.
type demoHost struct {
	name, peer string
	args       func(run string) []string
}

var demoHosts = []demoHost{
	{"host2", "0-1", func(run string) []string {
		return []string{"-adapter", "1", "-peer-route", "1", "-listen", "unix:" + filepath.Join(run, "cable.sock")}
	}},
	{"host1", "0-503", func(run string) []string {
		return []string{"-adapter", "3", "-peer-route", "503", "-connect", "unix:" + filepath.Join(run, "cable.sock")}
	}},
}

// up starts the two hosts as background daemons (re-running this binary)
// unless they run already, and waits until each sees the other's stream
// service.
func up(ctx context.Context, run string) error {
	if os.Geteuid() != 0 {
		return errors.New("tbstream up needs root (it mounts FUSE file systems)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, h := range demoHosts {
		dir := hostDir(run, h.name)
		if _, err := daemon.ReadStatus(dir); err == nil {
			continue // running
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		// With CUSE both hosts share one /dev: each gets a directory.
		args := append([]string{"daemon", "-name", h.name, "-run-dir", dir, "-device-prefix", h.name + "/"}, h.args(run)...)
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", h.name, err)
		}
		logf.Close()
		go cmd.Wait()
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, h := range demoHosts {
		for {
			st, err := daemon.ReadStatus(hostDir(run, h.name))
			if err == nil && hasStreamService(st) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not find its peer in 30 s; see %s", h.name, filepath.Join(hostDir(run, h.name), "log"))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func hasStreamService(st daemon.Status) bool {
	for _, p := range st.Peers {
		for _, s := range p.Services {
			if s.Key == "stream" {
				return true
			}
		}
	}
	return false
}

// down stops the hosts' daemons and waits for them to exit.
func down(run string) error {
	var errs []error
	for _, h := range demoHosts {
		dir := hostDir(run, h.name)
		b, err := os.ReadFile(filepath.Join(dir, "pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			continue
		}
		for i := 0; i < 100; i++ {
			if syscall.Kill(pid, 0) != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			errs = append(errs, fmt.Errorf("%s (pid %d) did not stop", h.name, pid))
		}
	}
	return errors.Join(errs...)
}
