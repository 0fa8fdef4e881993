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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestLockHolderParsesProcLocks(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 77 00:2a:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 4321 00:2b:91 0 EOF
4: FLOCK  ADVISORY  READ 555 00:2c:17 0 EOF
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
	pid, err = lockHolder(scan(), 0x00, 0x2c, 17)
	require.NoError(t, err)
	require.Zero(t, pid, "a shared lock is a probe's (Owner's), not a daemon's")
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
// daemon TestStartCleansWhatADeadDaemonLeft kills; with TBSTREAM_TEST_LOCK
// set to a file, a process that holds an exclusive flock on it (a daemon
// if its arguments say -run-dir, for Shutdown); with TBSTREAM_TEST_FDS,
// the process that fds_test.go starts with descriptors to inherit.
func TestMain(m *testing.M) {
	if path := os.Getenv("TBSTREAM_TEST_LOCK"); path != "" {
		lockAndWait(path)
	}
	if mode := os.Getenv("TBSTREAM_TEST_FDS"); mode != "" {
		os.Exit(reportFDs(mode))
	}
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

// lockAndWait takes an exclusive flock on path, says "locked" and waits
// to be killed.
func lockAndWait(path string) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("locked")
	select {}
}

// locker is a process that holds a file's exclusive flock.
type locker struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startLocker starts a process that holds path's exclusive flock, with
// args after the program (["-run-dir", run] makes it look like a daemon),
// and returns it once it holds the lock. It is killed at the test's end.
func startLocker(t *testing.T, path string, args ...string) *locker {
	t.Helper()
	c := exec.Command(os.Args[0], args...)
	c.Env = append(os.Environ(), "TBSTREAM_TEST_LOCK="+path)
	out, err := c.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, c.Start())
	l := &locker{cmd: c, exited: make(chan struct{})}
	go func() { c.Wait(); close(l.exited) }()
	t.Cleanup(func() {
		c.Process.Kill()
		<-l.exited
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)
	return l
}

func (l *locker) pid() int { return l.cmd.Process.Pid }

// alive says whether the locker still runs a moment from now (time for a
// signal sent to it to take effect).
func (l *locker) alive() bool {
	select {
	case <-l.exited:
		return false
	case <-time.After(200 * time.Millisecond):
		return true
	}
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

// Shutdown signals the holder of the run directory's lock only when it is
// the run directory's daemon: a process of root's (or the test's user)
// that has the lock file open and says -run-dir. A root shell's
// `flock lock CMD` holding the lock is spared, and said to be there.
func TestShutdownSignalsOnlyTheDaemon(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string // the lock holder's
		stopped bool
	}{
		{"a daemon", []string{"-name", "h", "-run-dir", "RUN"}, true},
		{"a daemon, -run-dir=", []string{"--run-dir=RUN"}, true},
		{"pair-daemon", []string{"-run", "ROOT", "pair-daemon"}, true},
		{"a stranger", []string{"sleep", "300"}, false},
		{"a stranger naming the run directory", []string{"RUN"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := tempDir(t)
			args := slices.Clone(c.args)
			for i, a := range args {
				args[i] = strings.NewReplacer("RUN", run, "ROOT", filepath.Dir(run)).Replace(a)
			}
			require.NoError(t, os.WriteFile(pidPath(run), []byte("1\n"), 0o644))
			l := startLocker(t, lockPath(run), args...)
			pid, err := Owner(run)
			require.NoError(t, err)
			require.Equal(t, l.pid(), pid)

			done, err := Shutdown(t.Context(), run, 5*time.Second)
			if c.stopped {
				require.NoError(t, err)
				assert.Equal(t, []string{fmt.Sprintf("stopped pid %d", pid), "removed stale pid"}, done)
				assert.False(t, l.alive(), "not stopped")
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("is locked by pid %d, which is not its tbstreamd (it runs ", pid))
			assert.Contains(t, err.Error(), "not signalled")
			assert.Empty(t, done)
			assert.True(t, l.alive(), "a stranger was signalled")
			assert.FileExists(t, pidPath(run), "cleaned while the lock is held")
		})
	}
}

// checkDaemon wants the lock file itself open: a process that says
// -run-dir and holds the lock of another file is not the daemon.
func TestCheckDaemonWantsTheLockOpen(t *testing.T) {
	run := tempDir(t)
	l := startLocker(t, filepath.Join(run, "other"), "-run-dir", run)
	require.NoError(t, os.WriteFile(lockPath(run), nil, 0o600))
	var lock, other unix.Stat_t
	require.NoError(t, unix.Stat(lockPath(run), &lock))
	require.NoError(t, unix.Stat(filepath.Join(run, "other"), &other))
	require.ErrorContains(t, checkDaemon(l.pid(), &lock), "does not have the lock file open")
	require.ErrorContains(t, checkDaemon(l.pid(), &other), "does not have the lock file open", "a file not named lock is not looked at")

	l = startLocker(t, lockPath(run), "-run-dir", run)
	require.NoError(t, unix.Stat(lockPath(run), &lock))
	require.NoError(t, checkDaemon(l.pid(), &lock))
}

func TestStatusEUID(t *testing.T) {
	for _, c := range []struct {
		status string
		euid   int
		ok     bool
	}{
		{"Name:\ttbstream\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n", 0, true},
		{"Uid:\t0\t65534\t65534\t65534\n", 65534, true},
		{"Uid:\t0\n", 0, false},
		{"Name:\tx\n", 0, false},
	} {
		euid, ok := statusEUID(c.status)
		assert.Equal(t, c.ok, ok, c.status)
		assert.Equal(t, c.euid, euid, c.status)
	}
}

func TestDaemonCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"tbstreamd", "-run-dir", "/run/tbstream/host1"}, true},
		{[]string{"tbstream", "daemon", "-name", "host1", "-run-dir", "/r/host1", "-device-prefix", "host1/"}, true},
		{[]string{"tbstreamd", "--run-dir=/r"}, true},
		{[]string{"tbstreamd", "-run-dir=/r"}, true},
		{[]string{"tbstream", "-run", "/r", "pair-daemon"}, true},
		{[]string{"tbstream", "-run", "/r", "list"}, false},
		{[]string{"flock", "/r/host1/lock", "sleep", "300"}, false},
		{[]string{"-run-dir"}, false}, // the program itself
		{[]string{"x", "run-dir"}, false},
		{[]string{"x", "-run-directory"}, false},
		{nil, false},
	} {
		assert.Equal(t, c.want, daemonCommand(c.args), "%q", c.args)
	}
}
