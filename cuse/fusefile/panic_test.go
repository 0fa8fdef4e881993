package fusefile_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fusefile"
	"tbstream/cuse/loopback"
)

// panicDevice is a loopback pipe that panics once in each call named in
// pending, then behaves. Release and Done do their work first and panic
// after, so the pipe's turns are given back; the others panic before
// touching the pipe.
type panicDevice struct {
	cuse.Device
	mu      sync.Mutex
	pending map[string]bool
}

func (d *panicDevice) maybePanic(op string) {
	d.mu.Lock()
	p := d.pending[op]
	delete(d.pending, op)
	d.mu.Unlock()
	if p {
		panic("injected panic in " + op)
	}
}

func (d *panicDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	d.maybePanic("open")
	h, err := d.Device.Open(ctx, req)
	if err != nil {
		return nil, err
	}
	return &panicHandle{Handle: h, d: d}, nil
}

type panicHandle struct {
	cuse.Handle
	d *panicDevice
}

func (h *panicHandle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	h.d.maybePanic("read")
	res, err := h.Handle.Read(ctx, req)
	if done := res.Done; done != nil {
		res.Done = func(delivered bool) {
			done(delivered)
			h.d.maybePanic("done")
		}
	}
	return res, err
}

func (h *panicHandle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	h.d.maybePanic("write")
	return h.Handle.Write(ctx, req)
}

func (h *panicHandle) Release(ctx context.Context) {
	h.Handle.Release(ctx)
	h.d.maybePanic("release")
}

// logBuffer collects what a mount logs, from any goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestFallbackDevicePanics: through a real mount, a device call that
// panics fails the syscall with EIO, logs one error line with the stack,
// is counted, and the next syscall works. A panic in Done, which go-fuse
// calls after writing the reply and outside its own recover, would end
// the test binary without the fallback's recovery.
func TestFallbackDevicePanics(t *testing.T) {
	tests := []struct {
		op  string
		run func(t *testing.T, path string)
	}{
		{"open", func(t *testing.T, path string) {
			_, err := os.OpenFile(path, os.O_RDWR, 0)
			require.ErrorIs(t, err, syscall.EIO)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{"write", func(t *testing.T, path string) {
			f := openFile(t, path)
			_, err := f.Write([]byte("lost"))
			require.ErrorIs(t, err, syscall.EIO)
			_, err = f.Write([]byte("kept"))
			require.NoError(t, err)
			require.Equal(t, "kept", readSome(t, f))
		}},
		{"read", func(t *testing.T, path string) {
			f := openFile(t, path)
			_, err := f.Write([]byte("data"))
			require.NoError(t, err)
			_, err = f.Read(make([]byte, 16))
			require.ErrorIs(t, err, syscall.EIO)
			require.Equal(t, "data", readSome(t, f), "the device was not touched")
		}},
		{"done", func(t *testing.T, path string) {
			f := openFile(t, path)
			_, err := f.Write([]byte("ab"))
			require.NoError(t, err)
			buf := make([]byte, 1)
			_, err = io.ReadFull(f, buf)
			require.NoError(t, err, "the reply went out before Done panicked")
			require.Equal(t, "a", string(buf))
			require.Equal(t, "b", readSome(t, f))
		}},
		{"release", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			f = openFile(t, path)
			_, err = f.Write([]byte("x"))
			require.NoError(t, err)
			require.Equal(t, "x", readSome(t, f))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			logs := &logBuffer{}
			d := mountDir(t, fusefile.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			dev := &panicDevice{Device: loopback.New(0), pending: map[string]bool{tt.op: true}}
			require.NoError(t, d.Add("tbstream0", fusefile.File{Device: dev}))
			tt.run(t, filepath.Join(d.path, "tbstream0"))
			// RELEASE is asynchronous to close(2): wait for it, but only
			// against a hang.
			require.Eventually(t, func() bool { return d.Panics() == 1 }, hangGuard, time.Millisecond, "panics counted")
			var lines []string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "panic in device handler") {
					lines = append(lines, l)
				}
			}
			require.Len(t, lines, 1, "one log line per panic:\n%s", logs)
			require.Contains(t, lines[0], "level=ERROR")
			require.Contains(t, lines[0], "injected panic in "+tt.op)
			require.Contains(t, lines[0], "maybePanic", "the stack reaches the panicking call")
		})
	}
}

type mountedDir struct {
	*fusefile.Dir
	path string
}

// mountDir mounts an empty Dir; it skips, saying why, where a FUSE mount
// cannot be made.
func mountDir(t *testing.T, opts fusefile.Options) mountedDir {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts with mount(2) (DirectMountStrict)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (CONFIG_FUSE_FS)")
	}
	mnt := t.TempDir()
	d, err := fusefile.MountDir(mnt, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if d.Unmount() != nil {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return mountedDir{Dir: d, path: mnt}
}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// readSome reads what one read(2) returns.
func readSome(t *testing.T, f *os.File) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := f.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}
