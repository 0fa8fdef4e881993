package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestLockHolderParsesProcLocks(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 77 00:2a:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 4321 00:2b:91 0 EOF
`
	scan := func() *bufio.Scanner { return bufio.NewScanner(strings.NewReader(locks)) }
	pid, err := lockHolder(scan(), 0xfd, 0x01, 5678)
	require.NoError(t, err)
	require.Equal(t, 1234, pid, "the FLOCK holder, not the POSIX lock on another file nor the waiter")
	pid, err = lockHolder(scan(), 0x00, 0x30, 91)
	require.NoError(t, err)
	require.Equal(t, 4321, pid, "a device number stat(2) reports differently: the inode alone, one holder")
	pid, err = lockHolder(scan(), 0x00, 0x2a, 5)
	require.NoError(t, err)
	require.Zero(t, pid)
}

func TestParseMountsUnder(t *testing.T) {
	const mountinfo = `22 1 0:21 / / rw - ext4 /dev/root rw
39 22 0:39 / /run/tb/host1 rw - tmpfs tmpfs rw
40 22 0:40 / /run/tb/host1/config rw,nosuid - fuse.configfs tbstream rw
41 22 0:41 / /run/tb/host1/dev rw - fuse tbstream rw
42 22 0:42 / /run/tb/host10/dev rw - fuse tbstream rw
43 22 0:43 / /run/tb/host1/with\040space rw - fuse tbstream rw
44 41 0:44 / /run/tb/host1/dev/deeper rw - tmpfs tmpfs rw
`
	got, err := parseMountsUnder(bufio.NewScanner(strings.NewReader(mountinfo)), "/run/tb/host1/")
	require.NoError(t, err)
	require.Equal(t, []string{"/run/tb/host1/dev/deeper", "/run/tb/host1/config", "/run/tb/host1/dev", "/run/tb/host1/with space"}, got,
		"below the directory only (not itself, not host10), unescaped, deepest first")
}

// Owner asks the lock, not the pid file: a pid file naming some process
// is not an owner, a held lock is, with the holder's PID from /proc/locks.
func TestOwnerIsTheLockHolder(t *testing.T) {
	run := t.TempDir()
	pid, err := Owner(run)
	require.NoError(t, err)
	require.Zero(t, pid, "no lock file")
	require.NoError(t, os.WriteFile(pidPath(run), []byte("1\n"), 0o644))
	f, err := os.Create(lockPath(run))
	require.NoError(t, err)
	defer f.Close()
	pid, err = Owner(run)
	require.NoError(t, err)
	require.Zero(t, pid, "a lock file nobody holds, whatever the pid file says")
	require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	pid, err = Owner(run)
	require.NoError(t, err)
	require.Equal(t, os.Getpid(), pid)
	require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_UN))
	pid, err = Owner(run)
	require.NoError(t, err)
	require.Zero(t, pid)
}

// TestMain plays, with TBSTREAM_TEST_DAEMON set to a run directory, the
// daemon TestStartCleansWhatADeadDaemonLeft kills.
func TestMain(m *testing.M) {
	if run := os.Getenv("TBSTREAM_TEST_DAEMON"); run != "" {
		if _, err := Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("ready")
		select {}
	}
	os.Exit(m.Run())
}

// What a daemon killed with SIGKILL leaves: mounts whose server is gone
// (ENOTCONN), the pid file, the status socket. The next daemon on the run
// directory removes them and starts.
func TestStartCleansWhatADeadDaemonLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	run := t.TempDir()
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "TBSTREAM_TEST_DAEMON="+run)
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	pid, err := Owner(run)
	require.NoError(t, err)
	require.Equal(t, child.Process.Pid, pid)
	require.NoError(t, child.Process.Kill())
	child.Wait()
	_, err = os.Stat(filepath.Join(ConfigDir(run), "thunderbolt"))
	require.ErrorIs(t, err, unix.ENOTCONN, "a dead FUSE server's mount")
	require.FileExists(t, pidPath(run))

	d, err := Start(context.Background(), Options{Name: "h", RunDir: run, Devices: "fuse", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(ConfigDir(run), "thunderbolt"))
	require.NoError(t, err, "configfs served by the new daemon")
	require.True(t, mounted(t, DevDir(run)))
	d.Stop()
	require.False(t, mounted(t, ConfigDir(run)))
	require.False(t, mounted(t, DevDir(run)))

	// Shutdown of a run directory nobody holds: only the leftovers go.
	require.NoError(t, os.WriteFile(pidPath(run), []byte("1\n"), 0o644))
	done, err := Shutdown(context.Background(), run, time.Second)
	require.NoError(t, err)
	require.Equal(t, []string{"removed stale pid"}, done)
}
