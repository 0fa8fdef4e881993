package cuse_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"tbstream/cuse"
	"tbstream/cuse/loopback"
)

// heldDevice blocks every Open (when blockOpen), Read and Write until the
// request's context ends, and says on held which call is blocked. It
// blocks in Read even when the server would park the READ: a device may
// (ReadRequest.Parkable), so the interrupt then takes the in-handler path.
// Closing stop ends the wait too (with EIO), so that a test which failed
// because an interrupt was not honoured does not leave its child stuck.
type heldDevice struct {
	blockOpen bool
	held      chan string
	stop      chan struct{}
}

func newHeldDevice(t *testing.T, blockOpen bool) *heldDevice {
	d := &heldDevice{blockOpen: blockOpen, held: make(chan string, 1), stop: make(chan struct{})}
	t.Cleanup(func() { close(d.stop) })
	return d
}

func (d *heldDevice) block(ctx context.Context, op string) error {
	select {
	case d.held <- op:
	default:
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stop:
		return syscall.EIO
	}
}

func (d *heldDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	if d.blockOpen {
		return nil, d.block(ctx, "open")
	}
	return heldHandle{d}, nil
}

type heldHandle struct{ d *heldDevice }

func (h heldHandle) Read(ctx context.Context, req *cuse.ReadRequest) (cuse.ReadResult, error) {
	return cuse.ReadResult{}, h.d.block(ctx, "read")
}

func (h heldHandle) Write(ctx context.Context, req *cuse.WriteRequest) (int, error) {
	return 0, h.d.block(ctx, "write")
}

func (h heldHandle) Poll(ctx context.Context, req *cuse.PollRequest) (uint32, error) {
	return 0, nil
}

func (h heldHandle) Release(ctx context.Context) {}

// requireServes checks that the mount still serves: a round trip through
// a pipe file (added for the check).
func requireServes(t *testing.T, d *cuse.Dir) {
	t.Helper()
	name := fmt.Sprintf("check%d", time.Now().UnixNano())
	require.NoError(t, d.Add(name, cuse.File{Device: loopback.New(0)}))
	fd := openFD(t, filepath.Join(d.Path(), name), unix.O_RDWR)
	writeAll(t, fd, []byte("still serving"))
	require.Equal(t, "still serving", readSome(t, fd))
}

// TestDirSignalInterrupts: open(2), read(2) and write(2) blocked on a
// fallback file fail with EINTR when the caller catches a signal, so its
// handler runs: the kernel sends INTERRUPT, and the server answers the
// request, whether it waits in the device (heldDevice), is parked (a READ
// of an empty pipe) or waits for room (a WRITE to a full pipe). The
// interrupt is counted and the mount serves on.
func TestDirSignalInterrupts(t *testing.T) {
	tests := []struct {
		name string
		op   string
		dev  func(t *testing.T) cuse.Device
		// blocked waits until the child's request is blocked.
		blocked func(t *testing.T, d *cuse.Dir, dev cuse.Device)
		// after checks the device once the child is done.
		after func(t *testing.T, d *cuse.Dir, dev cuse.Device)
	}{
		{name: "open held in the device", op: "open",
			dev:     func(t *testing.T) cuse.Device { return newHeldDevice(t, true) },
			blocked: waitHeld("open")},
		{name: "read held in the device", op: "read",
			dev:     func(t *testing.T) cuse.Device { return newHeldDevice(t, false) },
			blocked: waitHeld("read")},
		{name: "write held in the device", op: "write",
			dev:     func(t *testing.T) cuse.Device { return newHeldDevice(t, false) },
			blocked: waitHeld("write")},
		{name: "parked read of an empty pipe", op: "read",
			dev: func(t *testing.T) cuse.Device { return loopback.New(0) },
			blocked: func(t *testing.T, d *cuse.Dir, _ cuse.Device) {
				eventually(t, "the READ parked", func() bool { return d.Stats().Parked.Load() == 1 })
			},
			after: func(t *testing.T, d *cuse.Dir, dev cuse.Device) {
				fd := openFD(t, filepath.Join(d.Path(), "tbstream0"), unix.O_RDWR)
				writeAll(t, fd, []byte("after"))
				require.Equal(t, "after", readSome(t, fd), "the interrupted READ took nothing")
			}},
		{name: "write to a full pipe", op: "write",
			dev: func(t *testing.T) cuse.Device { return loopback.New(16) },
			blocked: func(t *testing.T, d *cuse.Dir, _ cuse.Device) {
				// The test's own write filled the pipe: one WRITE.
				eventually(t, "the child's WRITE in the device", func() bool { return d.Stats().Writes.Load() == 2 })
			},
			after: func(t *testing.T, d *cuse.Dir, dev cuse.Device) {
				require.Equal(t, 16, dev.(*loopback.Pipe).Buffered(), "the interrupted WRITE added nothing")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := tt.dev(t)
			d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: dev}})
			path := filepath.Join(d.Path(), "tbstream0")
			if p, ok := dev.(*loopback.Pipe); ok && tt.op == "write" {
				fd := openFD(t, path, unix.O_WRONLY)
				writeAll(t, fd, make([]byte, 16))
				require.Equal(t, 16, p.Buffered())
			}
			c := startChild(t, d, tt.op, path)
			var tid int
			_, err := fmt.Sscanf(c.line(t, "the child's start"), "ready %d", &tid)
			require.NoError(t, err)
			tt.blocked(t, d, dev)
			require.Zero(t, d.Stats().Interrupts.Load())
			require.NoError(t, syscall.Tgkill(c.cmd.Process.Pid, tid, syscall.SIGUSR1))
			require.Equal(t, fmt.Sprintf("errno=%d caught=true", syscall.EINTR), c.line(t, "the child's "+tt.op+" to return after the signal"),
				"the blocked %s fails with EINTR and the handler runs", tt.op)
			c.waitOK(t)
			require.EqualValues(t, 1, d.Stats().Interrupts.Load(), "the INTERRUPT was counted")
			if tt.after != nil {
				tt.after(t, d, dev)
			}
			requireServes(t, d)
		})
	}
}

// waitHeld waits until the heldDevice holds op.
func waitHeld(op string) func(t *testing.T, d *cuse.Dir, dev cuse.Device) {
	return func(t *testing.T, d *cuse.Dir, dev cuse.Device) {
		t.Helper()
		select {
		case got := <-dev.(*heldDevice).held:
			require.Equal(t, op, got)
		case <-time.After(dirGuard):
			t.Fatalf("the child's %s never reached the device", op)
		}
	}
}

// TestDirKilledClients: cat blocked reading an empty pipe file and dd
// blocked writing to a full one die of SIGINT and of SIGKILL. A FUSE
// request the server has read is waited for even by a killed process
// (uninterruptibly): the server must answer the INTERRUPT, and the mount
// then serves on.
func TestDirKilledClients(t *testing.T) {
	for _, tool := range []string{"cat", "dd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		for _, client := range []string{"cat", "dd"} {
			t.Run(client+" "+sig.String(), func(t *testing.T) {
				p := loopback.New(16)
				d := mountFiles(t, map[string]cuse.File{"tbstream0": {Device: p}})
				path := filepath.Join(d.Path(), "tbstream0")
				var cmd *exec.Cmd
				var blocked func() bool
				if client == "cat" {
					cmd = exec.Command("cat", path)
					blocked = func() bool { return d.Stats().Parked.Load() == 1 }
				} else {
					fd := openFD(t, path, unix.O_WRONLY)
					writeAll(t, fd, make([]byte, 16)) // full
					cmd = exec.Command("dd", "if=/dev/zero", "of="+path, "bs=4k", "count=1", "status=none")
					blocked = func() bool { return d.Stats().Writes.Load() == 2 }
				}
				require.NoError(t, cmd.Start())
				exited := make(chan struct{})
				go func() {
					cmd.Wait()
					close(exited)
				}()
				t.Cleanup(func() {
					cmd.Process.Kill()
					select {
					case <-exited:
					case <-time.After(dirGuard):
						d.Unmount() // fails the request it is stuck in
						<-exited
					}
				})
				eventually(t, client+" blocked in the device", blocked)
				require.NoError(t, cmd.Process.Signal(sig))
				select {
				case <-exited:
				case <-time.After(dirGuard):
					t.Fatalf("%s still alive %v after %v", client, dirGuard, sig)
				}
				ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
				require.True(t, ws.Signaled(), "%s: %v", client, cmd.ProcessState)
				require.Equal(t, sig, ws.Signal())
				// At least 1: the dying process's close(2) sends a FLUSH,
				// which its pending SIGKILL (or SIGINT) interrupts too.
				require.GreaterOrEqual(t, d.Stats().Interrupts.Load(), uint64(1), "the INTERRUPT was counted")
				if client == "dd" {
					require.Equal(t, 16, p.Buffered(), "the interrupted WRITE added nothing")
				}
				requireServes(t, d)
			})
		}
	}
}
