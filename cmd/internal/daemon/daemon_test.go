package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestStopRemovesEverything starts a daemon, makes a stream through its
// configfs mount, and checks that Stop leaves no mount, node or socket
// behind and that a second daemon on the same run directory is refused
// while the first runs.
func TestStopRemovesEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	run := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Logger: quiet})
	require.NoError(t, err)

	_, err = Start(context.Background(), Options{Name: "h2", RunDir: run, Devices: "fuse", Logger: quiet})
	require.ErrorIs(t, err, ErrRunning)

	stream := filepath.Join(ConfigDir(run), "thunderbolt", "stream")
	require.NoError(t, os.Mkdir(filepath.Join(stream, "0-1.0"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(stream, "0-1.0", "s"), 0o755))
	_, err = os.Stat(filepath.Join(DevDir(run), "tbstream0"))
	require.NoError(t, err, "the node appears at mkdir")
	st, err := ReadStatus(run)
	require.NoError(t, err)
	require.Equal(t, "fuse", st.Devices)
	require.Len(t, st.Groups, 1)
	require.True(t, mounted(t, ConfigDir(run)))
	require.True(t, mounted(t, DevDir(run)))

	// What a stuck test prints: every goroutine, the daemon's own
	// included, without stopping it.
	var stacks strings.Builder
	require.NoError(t, WriteStacks(&stacks, run))
	require.Contains(t, stacks.String(), "tbstreamd h (pid ")
	require.Contains(t, stacks.String(), "daemon.(*Daemon).serveStatusConn")
	_, err = ReadStatus(run)
	require.NoError(t, err, "still serving after the stacks")
	var prof bytes.Buffer
	require.NoError(t, WriteProfile(&prof, run, 200*time.Millisecond, false))
	require.True(t, bytes.HasPrefix(prof.Bytes(), []byte{0x1f, 0x8b}), "a pprof profile is gzipped protobuf")
	prof.Reset()
	require.NoError(t, WriteProfile(&prof, run, 200*time.Millisecond, true))
	require.True(t, bytes.HasPrefix(prof.Bytes(), []byte("go 1.")), "an execution trace starts with its version")

	d.Stop()
	require.False(t, mounted(t, ConfigDir(run)), "configfs unmounted")
	require.False(t, mounted(t, DevDir(run)), "devices unmounted")
	_, err = ReadStatus(run)
	require.Error(t, err, "status socket gone")
	require.Error(t, WriteStacks(io.Discard, run))
	_, err = os.Stat(filepath.Join(run, "pid"))
	require.True(t, errors.Is(err, os.ErrNotExist))

	// The run directory is free again.
	d, err = Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Logger: quiet})
	require.NoError(t, err)
	d.Stop()
}

// A cable listener that cannot listen fails the start, with nothing left
// mounted, so that a service manager sees the failure and retries; a
// daemon that ran on without its listener would look healthy and never
// be plugged in.
func TestListenFailureFailsStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	run := t.TempDir()
	notSocket := filepath.Join(t.TempDir(), "cable.sock")
	require.NoError(t, os.WriteFile(notSocket, nil, 0o600))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, addr := range []string{"tcp:" + taken.Addr().String(), "unix:" + notSocket} {
		_, err = Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Listen: addr, Logger: quiet})
		require.ErrorContains(t, err, "listen for a cable on "+addr)
		require.False(t, mounted(t, ConfigDir(run)), "%s: configfs unmounted", addr)
		require.False(t, mounted(t, DevDir(run)), "%s: devices unmounted", addr)
	}
	d, err := Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Listen: "tcp:127.0.0.1:0", Logger: quiet})
	require.NoError(t, err, "the run directory is free again, and a free address listens")
	d.Stop()
}
