package cuse_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cuse"
	"tbstream/cuse/loopback"
)

// The tests in the dir_*_test.go files serve devices over REAL FUSE
// mounts (MountDir): the kernel's FUSE client, not the fake kernel, sends
// the requests, so they check what a user of the fallback sees through
// open(2), read(2), write(2), poll(2), close(2) and signals.
//
// In this process they use raw descriptors (unix.Open), never os.OpenFile:
// an *os.File is registered with the Go runtime's netpoller, whose
// epoll_ctl(2) makes the kernel send a POLL to the server and wait for the
// answer, from a thread the runtime does not count as in a system call. A
// stop-the-world (a GC) then waits for that thread while the goroutines
// that would answer the POLL are stopped: the process deadlocks. (go-fuse
// avoided it by turning FUSE poll off; the fallback serves poll.) Go
// clients run in a child process instead (dir_child_test.go), and the
// epoll test calls epoll_ctl as a blocking system call (epollCtl), for
// the same reason. Every other call used here on a mounted file (open,
// read, write, close, poll, select, fstat, fcntl) is a blocking one.

// dirGuard only catches hangs; nothing is asserted about speed.
const dirGuard = 10 * time.Second

// mountDir mounts an empty Dir in a fresh directory and unmounts it at the
// end of the test (lazily if it is still busy). It skips, saying why,
// where a FUSE mount cannot be made.
func mountDir(t *testing.T, opts cuse.DirOptions) *cuse.Dir {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: MountDir mounts with mount(2)")
	}
	if _, err := os.Stat(cuse.DevFuse); err != nil {
		t.Skipf("needs %s (CONFIG_FUSE_FS): %v", cuse.DevFuse, err)
	}
	mnt := t.TempDir()
	d, err := cuse.MountDir(mnt, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := d.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return d
}

// mountFiles mounts a Dir serving files.
func mountFiles(t *testing.T, files map[string]cuse.File) *cuse.Dir {
	t.Helper()
	d := mountDir(t, cuse.DirOptions{})
	for name, f := range files {
		require.NoError(t, d.Add(name, f))
	}
	return d
}

// openFD opens path with open(2) and closes the descriptor at the end of
// the test.
func openFD(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	require.NoError(t, err, "open %s", path)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// readSome reads what one read(2) of fd returns.
func readSome(t *testing.T, fd int) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	require.NoError(t, err)
	return string(buf[:n])
}

// writeAll writes b with one write(2), which must take it whole.
func writeAll(t *testing.T, fd int, b []byte) {
	t.Helper()
	n, err := unix.Write(fd, b)
	require.NoError(t, err)
	require.Equal(t, len(b), n)
}

// eventually waits for cond, which the server reaches asynchronously,
// failing after dirGuard.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, dirGuard, time.Millisecond, what)
}

// within runs f on its own goroutine and fails the test if f fails or has
// not returned after dirGuard (a hang). what names it in the failure.
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		require.NoError(t, err, what)
	case <-time.After(dirGuard):
		t.Fatalf("%s: still running after %v", what, dirGuard)
	}
}

// writeFull writes b with one write(2), which must take it whole; for
// goroutines other than the test's (no require there).
func writeFull(fd int, b []byte) error {
	n, err := unix.Write(fd, b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("write(2) took %d of %d bytes", n, len(b))
	}
	return err
}

// TestDirFiles: files carry the mode and owner they were added with, the
// directory lists them, and a file name is free again after Remove.
func TestDirFiles(t *testing.T) {
	d := mountFiles(t, map[string]cuse.File{
		"tbstream0": {Device: loopback.New(0)},
		"tbstream1": {Device: loopback.New(0), Mode: 0o640, UID: 7, GID: 6},
	})
	for _, tt := range []struct {
		name     string
		mode     os.FileMode
		uid, gid uint32
	}{
		{"tbstream0", 0o600, 0, 0},
		{"tbstream1", 0o640, 7, 6},
	} {
		fi, err := os.Stat(filepath.Join(d.Path(), tt.name))
		require.NoError(t, err)
		require.Equal(t, tt.mode, fi.Mode(), "%s: a regular file with the mode asked for", tt.name)
		st := fi.Sys().(*syscall.Stat_t)
		require.Equal(t, tt.uid, st.Uid, tt.name)
		require.Equal(t, tt.gid, st.Gid, tt.name)
	}
	fi, err := os.Stat(d.Path())
	require.NoError(t, err)
	require.True(t, fi.IsDir())

	ents, err := os.ReadDir(d.Path())
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		require.True(t, e.Type().IsRegular(), e.Name())
	}
	require.Equal(t, []string{"tbstream0", "tbstream1"}, names)

	var sfs unix.Statfs_t
	require.NoError(t, unix.Statfs(d.Path(), &sfs))
	require.EqualValues(t, 255, sfs.Namelen)

	_, err = os.Stat(filepath.Join(d.Path(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = unix.Open(d.Path(), unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.ErrorIs(t, err, syscall.EISDIR, "the directory is not a device")

	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b", strings.Repeat("x", 256)} {
		require.ErrorIs(t, d.Add(bad, cuse.File{Device: loopback.New(0)}), syscall.EINVAL, "%q", bad)
	}
	require.ErrorIs(t, d.Add("nodevice", cuse.File{}), syscall.EINVAL)

	d.Remove("tbstream1")
	ents, err = os.ReadDir(d.Path())
	require.NoError(t, err)
	require.Len(t, ents, 1)
	require.NoError(t, d.Add("tbstream1", cuse.File{Device: loopback.New(0)}), "the name is free again")
	fi, err = os.Stat(filepath.Join(d.Path(), "tbstream1"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode(), "the new file, not the removed one")
}

// TestDirAddRemove: files come and go on a mounted Dir as /dev nodes do;
// a handle opened before a removal keeps working.
func TestDirAddRemove(t *testing.T) {
	d := mountDir(t, cuse.DirOptions{})
	path := filepath.Join(d.Path(), "tbstream0")
	require.NoFileExists(t, path)

	require.NoError(t, d.Add("tbstream0", cuse.File{Device: loopback.New(0), Mode: 0o660}))
	require.ErrorIs(t, d.Add("tbstream0", cuse.File{Device: loopback.New(0)}), syscall.EEXIST)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o660), fi.Mode())

	fd := openFD(t, path, unix.O_RDWR)
	d.Remove("tbstream0")
	_, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.ErrorIs(t, err, syscall.ENOENT, "new opens fail after Remove")
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist)
	ents, err := os.ReadDir(d.Path())
	require.NoError(t, err)
	require.Empty(t, ents)

	writeAll(t, fd, []byte("still here"))
	require.Equal(t, "still here", readSome(t, fd), "an open handle outlives the removal")
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(fd, &st), "fstat of a removed file still works")
	require.EqualValues(t, unix.S_IFREG|0o660, st.Mode)
	d.Remove("tbstream0") // again: nothing to do

	// Made again at once (within the kernel's dentry timestamp
	// granularity): opens reach the new device, not the removed one.
	oldPipe, newPipe := loopback.New(0), loopback.New(0)
	require.NoError(t, d.Add("tbstream1", cuse.File{Device: oldPipe}))
	writeAll(t, openFD(t, filepath.Join(d.Path(), "tbstream1"), unix.O_WRONLY), []byte("old"))
	d.Remove("tbstream1")
	require.NoError(t, d.Add("tbstream1", cuse.File{Device: newPipe}))
	writeAll(t, openFD(t, filepath.Join(d.Path(), "tbstream1"), unix.O_WRONLY), []byte("new!"))
	require.Equal(t, 3, oldPipe.Buffered())
	require.Equal(t, 4, newPipe.Buffered())
}

// TestDirGoClients uses os.File on both ends, in a child process (see
// the top of this file): Go makes the descriptors non-blocking and waits
// in its netpoller (epoll, edge-triggered), so the reader relies on EAGAIN
// from an empty pipe, on POLL and on NOTIFY_POLL to wake it; 3 MiB through
// a 64 KiB pipe fills the pipe on the writer's side too.
func TestDirGoClients(t *testing.T) {
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: loopback.New(64 << 10)}})
	c := startChild(t, d, "goclient", filepath.Join(d.Path(), "tbstream0"))
	require.Equal(t, fmt.Sprintf("ok %d", goClientBytes), c.line(t, "the Go client's result"))
	c.waitOK(t)
	st := d.Stats()
	require.Positive(t, st.Polls.Load(), "the netpoller's epoll registration polls the file")
	require.EqualValues(t, goClientBytes, st.WriteBytes.Load())
	eventually(t, "every byte read counted", func() bool { return st.ReadBytes.Load() == goClientBytes })
}

// TestDirBlockingRoundTrip: plain blocking descriptors (the READ is
// parked until the write comes), with requests of 1 MiB, the most a FUSE
// mount takes, both ways.
func TestDirBlockingRoundTrip(t *testing.T) {
	p := loopback.New(4 << 20)
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: p}})
	path := filepath.Join(d.Path(), "tbstream0")
	rd := openFD(t, path, unix.O_RDONLY)
	wr := openFD(t, path, unix.O_WRONLY|unix.O_TRUNC)

	want := make([]byte, 3<<20)
	rand.Read(want)
	got := make(chan []byte, 1)
	go func() {
		var b []byte
		buf := make([]byte, 1<<20)
		for len(b) < len(want) {
			n, err := unix.Read(rd, buf)
			if err != nil || n == 0 {
				break
			}
			b = append(b, buf[:n]...)
		}
		got <- b
	}()
	eventually(t, "the first READ parked", func() bool { return d.Stats().Parked.Load() >= 1 })
	for off := 0; off < len(want); off += 1 << 20 {
		n, err := unix.Write(wr, want[off:off+1<<20])
		require.NoError(t, err)
		require.Equal(t, 1<<20, n, "one write(2) of 1 MiB is taken whole")
	}
	select {
	case b := <-got:
		require.True(t, bytes.Equal(want, b), "read %d bytes, wrote %d", len(b), len(want))
	case <-time.After(dirGuard):
		t.Fatal("reader stuck")
	}
	st := d.Stats()
	// The last reply's Done (which frees its bytes) and the byte count
	// follow the reply the reader already has.
	eventually(t, "the pipe drained", func() bool { return p.Buffered() == 0 && st.ReadBytes.Load() == uint64(len(want)) })
	require.EqualValues(t, len(want), st.WriteBytes.Load())
	require.Less(t, st.Writes.Load(), uint64(8), "1 MiB write(2)s go in few requests (max_write 1 MiB): %d WRITEs", st.Writes.Load())
}

// TestDirLargeReadReturnsWhatIsThere: a read(2) bigger than one request
// returns the bytes available instead of waiting to fill its buffer while
// the writer is still open.
func TestDirLargeReadReturnsWhatIsThere(t *testing.T) {
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: loopback.New(0)}})
	path := filepath.Join(d.Path(), "tbstream0")
	w := openFD(t, path, unix.O_WRONLY)
	chunk := bytes.Repeat([]byte{7}, 128<<10)
	writeAll(t, w, chunk)

	fd := openFD(t, path, unix.O_RDONLY)
	got := make(chan int, 1)
	go func() {
		n, _ := unix.Read(fd, make([]byte, 4<<20))
		got <- n
	}()
	select {
	case n := <-got:
		require.Equal(t, len(chunk), n)
	case <-time.After(dirGuard):
		unix.Write(w, []byte{0}) // unblock the reader before failing
		t.Fatal("read(2) of 4 MiB waited for more than the 128 KiB available")
	}
}

// TestDirShellTools: dd and cat, as a user would use the fallback file.
func TestDirShellTools(t *testing.T) {
	for _, tool := range []string{"dd", "cat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: loopback.New(0)}})
	path := filepath.Join(d.Path(), "tbstream0")
	src := filepath.Join(t.TempDir(), "src")
	want := make([]byte, 5<<20+17)
	rand.Read(want)
	require.NoError(t, os.WriteFile(src, want, 0o600))

	// cat reads until every writer has gone (end of file); dd writes in
	// 1 MiB blocks through O_TRUNC (dd's of= truncates).
	ctx, cancel := context.WithTimeout(context.Background(), dirGuard)
	defer cancel()
	var out bytes.Buffer
	cat := exec.CommandContext(ctx, "cat", path)
	cat.Stdout = &out
	// cat opens the file before dd is done: 5 MiB do not fit in the 1 MiB
	// pipe. (A reader that came after the last writer left would wait
	// for the next one.)
	require.NoError(t, cat.Start())
	dd := exec.CommandContext(ctx, "dd", "if="+src, "of="+path, "bs=1M", "status=none")
	ddOut, err := dd.CombinedOutput()
	require.NoError(t, err, "dd: %s", ddOut)
	require.NoError(t, cat.Wait(), "cat")
	require.True(t, bytes.Equal(want, out.Bytes()), "cat read %d bytes, dd wrote %d", out.Len(), len(want))

	// And back: the file as dd's input.
	w := openFD(t, path, unix.O_WRONLY)
	writeAll(t, w, want[:1<<20])
	dst := filepath.Join(t.TempDir(), "dst")
	ddIn := exec.CommandContext(ctx, "dd", "if="+path, "of="+dst, "bs=64k", "count=16", "iflag=fullblock", "status=none")
	ddOut, err = ddIn.CombinedOutput()
	require.NoError(t, err, "dd: %s", ddOut)
	b, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want[:1<<20], b))
}

// TestDirPermissionsForOtherUsers: files are opened by other users as
// their mode and owner allow (allow_other, default_permissions), as for a
// character device.
func TestDirPermissionsForOtherUsers(t *testing.T) {
	const nobody = 65534
	d := mountFiles(t, map[string]cuse.File{
		"private": {Device: loopback.New(0)},
		"shared":  {Device: loopback.New(0), Mode: 0o666},
		"owned":   {Device: loopback.New(0), UID: nobody, GID: nobody},
		"group":   {Device: loopback.New(0), Mode: 0o660, GID: nobody},
	})
	// nobody must be able to walk to the mount point.
	for p := filepath.Dir(d.Path()); p != "/"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			require.NoError(t, os.Chmod(p, fi.Mode().Perm()|0o001))
			t.Cleanup(func() { os.Chmod(p, fi.Mode().Perm()) })
		}
	}
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"private", false}, {"shared", true}, {"owned", true}, {"group", true}} {
		c := exec.Command("/bin/sh", "-c", `exec 3<>"$0"`, filepath.Join(d.Path(), tt.name))
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := c.CombinedOutput()
		if tt.ok {
			require.NoError(t, err, "%s: user nobody may open it: %s", tt.name, out)
		} else {
			require.Error(t, err, "%s: 0600 root: user nobody may not open it", tt.name)
			require.Contains(t, string(out), "Permission denied")
		}
	}
}

// flushDevice is a loopback whose handles fail FLUSH.
type flushDevice struct{ cuse.Device }

func (d flushDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	h, err := d.Device.Open(ctx, req)
	return flushHandle{h}, err
}

type flushHandle struct{ cuse.Handle }

func (flushHandle) Flush(context.Context) error {
	return fmt.Errorf("bytes will not arrive: %w", syscall.EIO)
}

// TestDirFlushErrorReachesClose: a handle's Flush error is what close(2)
// returns; a handle without one closes with 0.
func TestDirFlushErrorReachesClose(t *testing.T) {
	d := mountFiles(t, map[string]cuse.File{
		"flushing": {Device: flushDevice{loopback.New(0)}},
		"plain":    {Device: loopback.New(0)},
	})
	for name, want := range map[string]error{"flushing": syscall.EIO, "plain": nil} {
		fd, err := unix.Open(filepath.Join(d.Path(), name), unix.O_RDWR, 0)
		require.NoError(t, err)
		err = unix.Close(fd)
		if want == nil {
			require.NoError(t, err, name)
		} else {
			require.ErrorIs(t, err, want, name)
		}
	}
}
