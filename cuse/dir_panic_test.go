package cuse_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cuse"
)

// flushPanicDevice is a panicDevice (panic_test.go) whose handles are
// Flushers too, so that "flush" can panic as well.
type flushPanicDevice struct{ *panicDevice }

func (d flushPanicDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	h, err := d.panicDevice.Open(ctx, req)
	if err != nil {
		return nil, err
	}
	return flushPanicHandle{h.(*panicHandle)}, nil
}

type flushPanicHandle struct{ *panicHandle }

func (h flushPanicHandle) Flush(context.Context) error {
	h.d.maybePanic("flush")
	return nil
}

// TestDirDevicePanics: through a real mount, a device call that panics
// fails the syscall with EIO (poll(2) reports POLLERR; close(2) fails
// for FLUSH; RELEASE has nobody to tell), logs one error line with the
// stack, is counted, and the next syscall works.
func TestDirDevicePanics(t *testing.T) {
	tests := []struct {
		op  string
		run func(t *testing.T, path string)
	}{
		{"open", func(t *testing.T, path string) {
			_, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			require.ErrorIs(t, err, syscall.EIO)
			openFD(t, path, unix.O_RDWR)
		}},
		{"write", func(t *testing.T, path string) {
			fd := openFD(t, path, unix.O_RDWR)
			_, err := unix.Write(fd, []byte("lost"))
			require.ErrorIs(t, err, syscall.EIO)
			writeAll(t, fd, []byte("kept"))
			require.Equal(t, "kept", readSome(t, fd))
		}},
		{"read", func(t *testing.T, path string) {
			fd := openFD(t, path, unix.O_RDWR)
			writeAll(t, fd, []byte("data"))
			_, err := unix.Read(fd, make([]byte, 16))
			require.ErrorIs(t, err, syscall.EIO)
			require.Equal(t, "data", readSome(t, fd), "the device was not touched")
		}},
		{"done", func(t *testing.T, path string) {
			fd := openFD(t, path, unix.O_RDWR)
			writeAll(t, fd, []byte("ab"))
			buf := make([]byte, 1)
			n, err := unix.Read(fd, buf)
			require.NoError(t, err, "the reply went out before Done panicked")
			require.Equal(t, "a", string(buf[:n]))
			require.Equal(t, "b", readSome(t, fd))
		}},
		{"poll", func(t *testing.T, path string) {
			fd := openFD(t, path, unix.O_RDWR)
			require.Equal(t, int16(unix.POLLERR), ready(t, waitPoll, fd, unix.POLLOUT), "a failed POLL is POLLERR")
			require.Equal(t, int16(unix.POLLOUT), ready(t, waitPoll, fd, unix.POLLOUT))
		}},
		{"flush", func(t *testing.T, path string) {
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			require.ErrorIs(t, unix.Close(fd), syscall.EIO, "close(2) fails with the FLUSH")
			fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.Close(fd))
		}},
		{"release", func(t *testing.T, path string) {
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.Close(fd), "close(2) is not the place for the device's bug")
			fd = openFD(t, path, unix.O_RDWR)
			writeAll(t, fd, []byte("x"))
			require.Equal(t, "x", readSome(t, fd))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			logs := &logBuffer{}
			d := mountDir(t, cuse.DirOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			require.NoError(t, d.Add("tbstream0", cuse.File{Device: flushPanicDevice{newPanicDevice(tt.op)}}))
			tt.run(t, filepath.Join(d.Path(), "tbstream0"))
			// RELEASE is asynchronous to close(2), and Done runs after
			// its reply is out: wait for the count, but only against a
			// hang.
			eventually(t, "the panic counted", func() bool { return d.Stats().Panics.Load() >= 1 })
			require.EqualValues(t, 1, d.Stats().Panics.Load())
			requirePanicLogged(t, logs.String(), tt.op)
		})
	}
}
