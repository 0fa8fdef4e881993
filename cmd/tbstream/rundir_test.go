package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cmd/internal/daemon"
)

// testMainEnv makes the test binary tbstream itself (TestBinaryHelp).
const testMainEnv = "TBSTREAM_TEST_MAIN"

// TestMain stops a test binary that up started as a daemon (up re-runs
// os.Executable(), here the test binary): should a refusal tested here
// fail to refuse, the child must not run the tests again. With
// testMainEnv it runs main; what that starts is refused again.
func TestMain(m *testing.M) {
	if os.Getenv(testMainEnv) != "" {
		os.Unsetenv(testMainEnv)
		main()
	}
	const child = "TBSTREAM_TEST_PARENT"
	if os.Getenv(child) != "" {
		fmt.Fprintln(os.Stderr, "tbstream test binary started as a daemon: refused")
		os.Exit(3)
	}
	os.Setenv(child, "1")
	os.Exit(m.Run())
}

// nobody is the unprivileged user that owns what a test plants.
const nobody = 65534

// mkdirMode makes dir with exactly mode (chmod(2) bits), owned by uid
// (-1: ours).
func mkdirMode(t *testing.T, dir string, mode uint32, uid int) string {
	t.Helper()
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, unix.Chmod(dir, mode))
	if uid >= 0 {
		require.NoError(t, os.Lchown(dir, uid, uid))
	}
	return dir
}

// tree is what a directory holds, for a before/after comparison: per
// name (symlinks not followed), its type and mode, owner, size and
// modification time, and a file's sha256 or a symlink's target.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		what := fmt.Sprintf("mode %o uid %d size %d mtime %d.%09d", st.Mode, st.Uid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			what += fmt.Sprintf(" sha256 %x", sha256.Sum256(b))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			what += " -> " + target
		}
		m[p] = what
		return nil
	}))
	return m
}

// plantedRunRoot is a run root with each host's log, lock, pid and status
// socket, and the cable socket, planted as symlinks to files of outside.
// owner owns the run root, the host directories and the links.
func plantedRunRoot(t *testing.T, base string, mode uint32, owner int) (run, outside string) {
	t.Helper()
	outside = mkdirMode(t, filepath.Join(base, "outside"), 0o755, -1)
	run = mkdirMode(t, filepath.Join(base, "run"), mode, owner)
	plant := func(link, name string) {
		target := filepath.Join(outside, name)
		require.NoError(t, os.WriteFile(target, []byte("precious "+name+"\n"), 0o600))
		require.NoError(t, os.Symlink(target, link))
		if owner >= 0 {
			require.NoError(t, os.Lchown(link, owner, owner))
		}
	}
	plant(filepath.Join(run, "cable.sock"), "cable.sock")
	for _, h := range demoHosts {
		dir := mkdirMode(t, filepath.Join(run, h.name), 0o755, owner)
		for _, name := range []string{"log", "lock", "pid", "status.sock"} {
			plant(filepath.Join(dir, name), h.name+"."+name)
		}
	}
	return run, outside
}

// up refuses, with one line naming the directory and the fix, a run
// directory that is not root's alone, before it opens, creates or starts
// anything: what the symlinks planted there point at is untouched.
func TestUpRefusesUnsafeRunDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("up needs root; the run directories are given to uid 65534 (nobody)")
	}
	for _, c := range []struct {
		name  string
		mode  uint32
		owner int
		// change makes the run root unsafe (if mode and owner did not)
		// and returns the directory the refusal names.
		change func(t *testing.T, run string) string
		want   string
	}{
		{"run root of nobody's", 0o755, nobody, nil, "is owned by uid 65534, not root"},
		{"run root writable by all", 0o777, -1, nil, "is writable by others (mode 0777)"},
		{"run root writable by all, sticky", 0o1777, -1, nil, "is writable by others (mode 1777)"},
		{"host directory of nobody's", 0o755, -1, func(t *testing.T, run string) string {
			dir := filepath.Join(run, "host1")
			require.NoError(t, os.Lchown(dir, nobody, nobody))
			return dir
		}, "is owned by uid 65534, not root"},
		{"run root a symlink", 0o755, -1, func(t *testing.T, run string) string {
			real := run + ".real"
			require.NoError(t, os.Rename(run, real))
			require.NoError(t, os.Symlink(real, run))
			return run
		}, "is a symbolic link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			run, outside := plantedRunRoot(t, t.TempDir(), c.mode, c.owner)
			refused := run
			if c.change != nil {
				refused = c.change(t, run)
			}
			before := tree(t, outside)
			links := tree(t, run)

			reports, err := up(t.Context(), run, cableShm)
			require.Error(t, err)
			assert.Empty(t, reports)
			msg := "tbstream: " + err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			assert.Equal(t, fmt.Sprintf("tbstream: run directory %s %s; use a directory only root can write, e.g. -run /run/tbstream", refused, c.want), msg)
			assert.Equal(t, before, tree(t, outside), "files outside the run directory touched")
			after := tree(t, run)
			for p, what := range links {
				assert.Equal(t, what, after[p], "%s changed", p)
			}
			assert.Empty(t, mountsUnder(t, run))
		})
	}
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	mounts, err := daemon.MountsUnder(dir)
	require.NoError(t, err)
	return mounts
}

// down refuses a run directory that is not root's alone, and never follows
// a lock that is a symlink: the process that holds a lock on its target
// (here one whose command line says -run-dir, as a daemon's does) is not
// signalled.
func TestDownRefusesUnsafeRunDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the run directory is given to uid 65534 (nobody)")
	}
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("needs flock(1) (util-linux) to hold a lock")
	}
	for _, c := range []struct {
		name  string
		owner int
		want  string
	}{
		{"run root of nobody's", nobody, "run directory %s is owned by uid 65534, not root; use a directory only root can write, e.g. -run /run/tbstream"},
		{"root's, with symlinked locks", -1, "host1: lock of %s/host1: open %[1]s/host1/lock: is a symbolic link; not followed\n" +
			"host2: lock of %[1]s/host2: open %[1]s/host2/lock: is a symbolic link; not followed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			run, outside := plantedRunRoot(t, t.TempDir(), 0o755, c.owner)
			// flock(1) stops at its command: -run-dir is sh's $0.
			holder := exec.Command("flock", "-x", filepath.Join(outside, "host2.lock"), "sh", "-c", "sleep 300", "-run-dir")
			// Its own process group: the kill takes sh and sleep, which
			// hold the lock too.
			holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			require.NoError(t, holder.Start())
			exited := make(chan struct{})
			go func() { holder.Wait(); close(exited) }()
			defer func() {
				syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
				<-exited
			}()
			require.Eventually(t, func() bool {
				b, _ := os.ReadFile("/proc/locks")
				return bytes.Contains(b, fmt.Appendf(nil, " %d ", holder.Process.Pid))
			}, 10*time.Second, 10*time.Millisecond, "flock(1) holds the lock")
			before := tree(t, outside)

			var out bytes.Buffer
			err := down(&out, run)
			require.Error(t, err)
			assert.Equal(t, fmt.Sprintf(c.want, run), err.Error())
			assert.Empty(t, out.String())
			select {
			case <-exited:
				t.Fatal("down signalled the process locking a planted lock's target")
			case <-time.After(200 * time.Millisecond):
			}
			assert.Equal(t, before, tree(t, outside), "files outside the run directory touched")
		})
	}
}

// A log planted as a symlink is not followed; a real one is appended to,
// and made mode 0640.
func TestOpenLogRefusesSymlink(t *testing.T) {
	base := t.TempDir()
	run := filepath.Join(base, "run")
	f, s, err := openLog(run, "host1")
	require.NoError(t, err, "run root and host directory made")
	_, err = f.WriteString("first\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Zero(t, s.from)
	require.NoError(t, os.Chmod(s.log, 0o666))
	f, s, err = openLog(run, "host1")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Equal(t, int64(len("first\n")), s.from, "appended to")
	st, err := os.Stat(s.log)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())

	target := filepath.Join(base, "outside")
	require.NoError(t, os.WriteFile(target, []byte("precious\n"), 0o600))
	require.NoError(t, os.Remove(s.log))
	require.NoError(t, os.Symlink(target, s.log))
	before := tree(t, target)
	_, _, err = openLog(run, "host1")
	require.ErrorContains(t, err, s.log+": is a symbolic link; not followed")
	assert.Equal(t, before, tree(t, target))
}
