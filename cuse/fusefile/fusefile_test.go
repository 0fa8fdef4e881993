package fusefile_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fusefile"
	"tbstream/cuse/loopback"
)

// mount serves loopback pipes under a fresh directory; it skips, saying
// why, where a FUSE mount cannot be made.
func mount(t *testing.T, files map[string]fusefile.File) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts with mount(2) (DirectMountStrict)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (CONFIG_FUSE_FS)")
	}
	dir := t.TempDir()
	srv, err := fusefile.Mount(dir, files, fusefile.Options{})
	require.NoError(t, err)
	t.Cleanup(func() {
		if srv.Unmount() != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

func TestFallbackFiles(t *testing.T) {
	dir := mount(t, map[string]fusefile.File{
		"tbstream0": {Device: loopback.New(0)},
		"tbstream1": {Device: loopback.New(0), Mode: 0o640, GID: 6},
	})
	tests := []struct {
		name string
		mode os.FileMode
		gid  uint32
	}{
		{"tbstream0", 0o600, 0},
		{"tbstream1", 0o640, 6},
	}
	for _, tt := range tests {
		fi, err := os.Stat(filepath.Join(dir, tt.name))
		require.NoError(t, err)
		require.Equal(t, tt.mode, fi.Mode())
		require.Equal(t, tt.gid, fi.Sys().(*syscall.Stat_t).Gid)
	}
}

// TestFallbackGoClients uses os.File on both ends: Go makes the fds
// non-blocking, and without poll the fallback must block instead of
// answering EAGAIN, or the reader would hang.
func TestFallbackGoClients(t *testing.T) {
	dir := mount(t, map[string]fusefile.File{"tbstream0": {Device: loopback.New(64 << 10)}})
	path := filepath.Join(dir, "tbstream0")
	want := make([]byte, 3<<20+123)
	rand.Read(want)

	r, err := os.OpenFile(path, os.O_RDONLY, 0)
	require.NoError(t, err)
	defer r.Close()
	errc := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			errc <- err
			return
		}
		_, err = w.Write(want)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, <-errc)
	require.True(t, bytes.Equal(want, got), "read %d bytes, wrote %d", len(got), len(want))
}

// TestFallbackKilledReader checks that a reader blocked in read(2) dies of
// SIGINT and SIGKILL: go-fuse cancels the request's context on INTERRUPT.
func TestFallbackKilledReader(t *testing.T) {
	dir := mount(t, map[string]fusefile.File{"tbstream0": {Device: loopback.New(0)}})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command("cat", filepath.Join(dir, "tbstream0"))
			require.NoError(t, cmd.Start())
			time.Sleep(200 * time.Millisecond) // let it reach read(2); either way it must die
			require.NoError(t, cmd.Process.Signal(sig))
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatal("reader still alive 30 s after the signal")
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			require.True(t, ws.Signaled())
			require.Equal(t, sig, ws.Signal())
		})
	}
}

// TestFallbackLargeReadReturnsWhatIsThere: a read(2) bigger than one
// request returns the bytes available instead of waiting to fill its
// buffer while the writer is still open.
func TestFallbackLargeReadReturnsWhatIsThere(t *testing.T) {
	dir := mount(t, map[string]fusefile.File{"tbstream0": {Device: loopback.New(0)}})
	path := filepath.Join(dir, "tbstream0")
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer w.Close()
	chunk := bytes.Repeat([]byte{7}, 128<<10) // exactly one full request
	_, err = w.Write(chunk)
	require.NoError(t, err)

	fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
	require.NoError(t, err)
	defer syscall.Close(fd)
	got := make(chan int, 1)
	go func() {
		n, _ := syscall.Read(fd, make([]byte, 1<<20))
		got <- n
	}()
	select {
	case n := <-got:
		require.Equal(t, len(chunk), n)
	case <-time.After(30 * time.Second):
		w.Write([]byte{0}) // unblock the reader before failing
		t.Fatal("read(2) of 1 MiB waited for more than the 128 KiB available")
	}
}

// Nodes are opened by other users as their mode and owner allow: the
// mount lets others in (allow_other) and the kernel checks the
// permissions (default_permissions), as for a character device.
func TestFallbackPermissionsForOtherUsers(t *testing.T) {
	const nobody = 65534
	dir := mount(t, map[string]fusefile.File{
		"private": {Device: loopback.New(0)},
		"shared":  {Device: loopback.New(0), Mode: 0o666},
		"owned":   {Device: loopback.New(0), UID: nobody, GID: nobody},
		"group":   {Device: loopback.New(0), Mode: 0o660, GID: nobody},
	})
	for p := dir; p != "/"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o005 == 0 && p != dir {
			require.NoError(t, os.Chmod(p, fi.Mode().Perm()|0o005))
		}
	}
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"private", false}, {"shared", true}, {"owned", true}, {"group", true}} {
		c := exec.Command("/bin/sh", "-c", `exec 3<>"$0"`, filepath.Join(dir, tt.name))
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

// A handle's Flush error is what close(2) returns; a handle without one
// closes with 0.
func TestFallbackFlushErrorReachesClose(t *testing.T) {
	dir := mount(t, map[string]fusefile.File{
		"flushing": {Device: flushDevice{loopback.New(0)}},
		"plain":    {Device: loopback.New(0)},
	})
	for name, want := range map[string]error{"flushing": syscall.EIO, "plain": nil} {
		fd, err := syscall.Open(filepath.Join(dir, name), syscall.O_RDWR, 0)
		require.NoError(t, err)
		err = syscall.Close(fd)
		if want == nil {
			require.NoError(t, err, name)
		} else {
			require.ErrorIs(t, err, want, name)
		}
	}
}
