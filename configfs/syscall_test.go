package configfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Behaviour a shell cannot show precisely, checked with direct system calls on the mount.

func (m *mounted) path(rel string) string { return filepath.Join(m.stream, rel) }

func TestMkdirIgnoresMode(t *testing.T) {
	m := mountForTest(t, nil)
	require.NoError(t, os.Mkdir(m.path("0-1.0"), 0o700))
	st, err := os.Stat(m.path("0-1.0"))
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|0o755, st.Mode())
}

// TestReadAgainAfterWrite: a write on an open file makes its next read call show() again.
func TestReadAgainAfterWrite(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup && echo 12 > 0-1.0/backup/in_hopid")
	f, err := os.OpenFile(m.path("0-1.0/backup/in_hopid"), os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf[:1], 0)
	require.NoError(t, err)
	require.Equal(t, "1", string(buf[:n]))
	m.ok("echo 9 > 0-1.0/backup/in_hopid")
	n, _ = f.ReadAt(buf, 1)
	require.Equal(t, "2\n", string(buf[:n]), "later reads come from the snapshot")
	_, err = f.WriteAt([]byte("0x10"), 0)
	require.NoError(t, err)
	n, _ = f.ReadAt(buf, 0)
	require.Equal(t, "16\n", string(buf[:n]), "a write refreshes the snapshot")
}

// TestWriteTakesOnePage: one write(2) hands at most 4095 bytes to store() and returns
// how many it took, so a longer write is short.
func TestWriteTakesOnePage(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup")
	fd, err := unix.Open(m.path("0-1.0/backup/ring_size"), unix.O_WRONLY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	data := strings.Repeat("0", attrPageSize-4) + "100" + "junk" // octal 0100 = 64 fills the page
	n, err := unix.Write(fd, []byte(data))
	require.NoError(t, err)
	require.Equal(t, attrPageSize-1, n)
	require.Equal(t, "64\n", m.ok("cat 0-1.0/backup/ring_size"))
	_, err = unix.Write(fd, []byte("8\n\n"))
	require.ErrorIs(t, err, unix.EINVAL, "one trailing newline only")
}

// TestOpenFileOfRemovedItem: after rmdir, an attribute still open answers ENOENT.
func TestOpenFileOfRemovedItem(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup")
	r, err := os.Open(m.path("0-1.0/backup/in_hopid"))
	require.NoError(t, err)
	defer r.Close()
	w, err := os.OpenFile(m.path("0-1.0/backup/in_hopid"), os.O_WRONLY, 0)
	require.NoError(t, err)
	defer w.Close()
	m.ok("rmdir 0-1.0/backup 0-1.0")
	_, err = w.Write([]byte("8\n"))
	require.ErrorIs(t, err, syscall.ENOENT)
	_, err = r.Read(make([]byte, 8))
	require.ErrorIs(t, err, syscall.ENOENT)
	require.Empty(t, m.backend.Groups())
}

func TestNoXattrs(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup")
	_, err := unix.Getxattr(m.path("0-1.0/backup/index"), "user.x", make([]byte, 8))
	require.ErrorIs(t, err, unix.EOPNOTSUPP)
	err = unix.Setxattr(m.path("0-1.0/backup/index"), "user.x", []byte("1"), 0)
	require.ErrorIs(t, err, unix.EOPNOTSUPP)
}

func TestStatfs(t *testing.T) {
	m := mountForTest(t, nil)
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(m.stream, &st))
	require.EqualValues(t, 4096, st.Bsize)
	require.EqualValues(t, 255, st.Namelen)
}

// TestDropCaches: items and their attributes survive the kernel forgetting every inode.
func TestDropCaches(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup && echo 9 > 0-1.0/backup/in_hopid && chmod 600 0-1.0/backup/out_hopid")
	before := m.ok("stat -c '%i %a %n' 0-1.0 0-1.0/backup 0-1.0/backup/*")
	_, stderr, code := m.sh("echo 3 > /proc/sys/vm/drop_caches")
	if code != 0 {
		t.Skipf("cannot drop the kernel's caches here: %s", stderr)
	}
	require.Equal(t, "backup\n", m.ok("ls 0-1.0"))
	require.Equal(t, "9\n", m.ok("cat 0-1.0/backup/in_hopid"))
	require.Equal(t, before, m.ok("stat -c '%i %a %n' 0-1.0 0-1.0/backup 0-1.0/backup/*"), "same inodes and modes")
	m.ok("echo 3 > /proc/sys/vm/drop_caches && rmdir -p 0-1.0/backup")
	require.Empty(t, m.backend.Groups())
}

// TestUnprivileged: like configfs, everyone may look and read, only root may change.
func TestUnprivileged(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup && echo 9 > 0-1.0/backup/in_hopid")
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	if _, _, code := m.shAs(nobody, "true"); code != 0 {
		t.Skip("setpriv cannot drop to nobody here")
	}
	for _, tc := range []struct{ script, want, err string }{
		{script: "cat 0-1.0/backup/in_hopid", want: "9\n"},
		{script: "ls 0-1.0/backup | wc -l", want: "6\n"},
		{script: "echo 8 > 0-1.0/backup/in_hopid", err: eacces},
		{script: "mkdir 0-2.0", err: eacces},
		{script: "mkdir 0-1.0/camera", err: eacces},
		{script: "rmdir 0-1.0/backup", err: eacces},
		{script: "chmod 666 0-1.0/backup/in_hopid", err: eperm},
		{script: "truncate -s 0 0-1.0/backup/in_hopid", err: eacces},
	} {
		stdout, stderr, code := m.shAs(nobody, tc.script)
		if tc.err != "" {
			require.NotZero(t, code, "%q as nobody succeeded", tc.script)
			require.Contains(t, stderr, tc.err, "%q", tc.script)
			continue
		}
		require.Zero(t, code, "%q as nobody: %s", tc.script, stderr)
		require.Equal(t, tc.want, stdout, "%q", tc.script)
	}
	require.Equal(t, "9\n", m.ok("cat 0-1.0/backup/in_hopid"))
	require.Equal(t, map[string][]string{"0-1.0": {"backup"}}, m.backend.Groups())
}

// TestConcurrentUsers: many processes' worth of mkdir, echo, cat and rmdir at once keep
// the tree and the backend in step (and the race detector quiet).
func TestConcurrentUsers(t *testing.T) {
	m := mountForTest(t, nil)
	const workers, rounds = 4, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			group := m.path(fmt.Sprintf("%d-1.0", w))
			for i := range rounds {
				item := filepath.Join(group, fmt.Sprintf("s%d", i%3))
				for _, step := range []func() error{
					func() error { return os.MkdirAll(item, 0o755) },
					func() error {
						return os.WriteFile(filepath.Join(item, "ring_size"), []byte(fmt.Sprintf("%d\n", 32+i)), 0)
					},
					func() error {
						got, err := os.ReadFile(filepath.Join(item, "ring_size"))
						if err == nil && string(got) != fmt.Sprintf("%d\n", 32+i) {
							err = fmt.Errorf("read %q after writing %d", got, 32+i)
						}
						return err
					},
					func() error { return os.Remove(item) },
				} {
					if err := step(); err != nil {
						errs <- err
						return
					}
				}
			}
			if err := os.Remove(group); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Empty(t, m.backend.Groups())
	require.Empty(t, strings.TrimSpace(m.ok("ls -A")))
}

// TestUnmount: cancelling the mount's context unmounts it; Unmount afterwards reports the
// same result.
func TestUnmount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE with mount(2) needs root (CAP_SYS_ADMIN); run as root")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Mount(ctx, dir, NewMemBackend(), Options{})
	require.NoError(t, err)
	require.Equal(t, dir, s.Dir())
	_, err = os.Stat(filepath.Join(dir, "thunderbolt", "stream"))
	require.NoError(t, err)
	cancel()
	s.Wait()
	require.NoError(t, s.Unmount())
	_, err = os.Stat(filepath.Join(dir, "thunderbolt"))
	require.ErrorIs(t, err, os.ErrNotExist, "the mount is gone")
}

// TestMountOverStaleMount: a daemon killed with SIGKILL leaves a mount answering ENOTCONN;
// the next Mount on that directory detaches it and serves again.
func TestMountOverStaleMount(t *testing.T) {
	if dir := os.Getenv("TBSTREAM_CONFIGFS_CRASH_DIR"); dir != "" {
		// The daemon to be killed: mount, say so, wait for SIGKILL.
		_, err := Mount(context.Background(), dir, NewMemBackend(), Options{})
		require.NoError(t, err)
		fmt.Println("mounted")
		select {}
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE with mount(2) needs root (CAP_SYS_ADMIN); run as root")
	}
	dir := t.TempDir()
	crash := exec.Command(os.Args[0], "-test.run=^TestMountOverStaleMount$")
	crash.Env = append(os.Environ(), "TBSTREAM_CONFIGFS_CRASH_DIR="+dir)
	stdout, err := crash.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, crash.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "mounted\n", line)
	require.NoError(t, crash.Process.Kill())
	_ = crash.Wait()
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, syscall.ENOTCONN, "the killed server's mount is stale")

	var logs lockedBuffer
	s, err := Mount(context.Background(), dir, NewMemBackend(), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Unmount()) }()
	require.Contains(t, logs.String(), "detaching a stale configfs mount")
	_, err = os.Stat(filepath.Join(dir, "thunderbolt", "stream"))
	require.NoError(t, err)
}

// TestUnmountBusy: with a shell inside the mount, Unmount detaches lazily and says so; the
// server stops when the last user leaves.
func TestUnmountBusy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE with mount(2) needs root (CAP_SYS_ADMIN); run as root")
	}
	dir := t.TempDir()
	s, err := Mount(context.Background(), dir, NewMemBackend(), Options{})
	require.NoError(t, err)
	shell := exec.Command("bash", "-c", `cd "$0/thunderbolt/stream" && echo inside && exec sleep 60`, dir)
	stdout, err := shell.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, shell.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "inside\n", line)

	unmountErr := s.Unmount()
	require.ErrorContains(t, unmountErr, "detached lazily")
	require.ErrorIs(t, unmountErr, syscall.EBUSY)
	_, err = os.Stat(filepath.Join(dir, "thunderbolt"))
	require.ErrorIs(t, err, os.ErrNotExist, "the mount point no longer shows the tree")

	require.NoError(t, shell.Process.Kill())
	_ = shell.Wait()
	s.Wait() // returns once the kernel drops the detached mount
	require.Equal(t, unmountErr, s.Unmount(), "later calls repeat the first result")
}

// TestNoStoreAfterRemove: writers hammering an item's attributes while it is removed get
// ENOENT afterwards, and the backend sees no Show or Store after the item's Remove.
func TestNoStoreAfterRemove(t *testing.T) {
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup")
	var mu sync.Mutex
	removed, late := false, 0
	m.backend.InjectFault(func(op Op) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case op.Kind == OpRemoveItem:
			removed = true
		case removed && (op.Kind == OpStore || op.Kind == OpShow):
			late++
		}
		return nil
	})
	var files []*os.File
	for _, attr := range []string{"in_hopid", "out_hopid", "ring_size", "throttling"} {
		f, err := os.OpenFile(m.path("0-1.0/backup/"+attr), os.O_RDWR, 0)
		require.NoError(t, err)
		defer f.Close()
		files = append(files, f)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(files))
	for _, f := range files {
		wg.Go(func() {
			for {
				_, err := f.WriteAt([]byte("64\n"), 0)
				if err == nil {
					_, err = unix.Pread(int(f.Fd()), make([]byte, 16), 0)
				}
				if errors.Is(err, syscall.ENOENT) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	m.ok("sleep 0.05 && rmdir 0-1.0/backup")
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	mu.Lock()
	defer mu.Unlock()
	require.True(t, removed)
	require.Zero(t, late, "Show or Store reached the backend after Remove")
}
