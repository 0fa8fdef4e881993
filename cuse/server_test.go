package cuse_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fakekernel"
	"tbstream/cuse/loopback"
)

// hangTimeout only catches hangs; nothing is asserted about speed.
const hangTimeout = 30 * time.Second

type rig struct {
	k     *fakekernel.Kernel
	srv   *cuse.Server
	dir   string
	serve chan error
	ctx   context.Context
}

// start serves dev to a fake kernel and completes CUSE_INIT.
func start(t *testing.T, dev cuse.Device, opts cuse.Options) *rig {
	t.Helper()
	dir := t.TempDir()
	k, err := fakekernel.New(fakekernel.Config{DevDir: dir})
	require.NoError(t, err)
	if opts.Name == "" {
		opts.Name = "tbstream0"
	}
	opts.Node.Dir = dir
	opts.Node.SysClass = filepath.Join(dir, "sys")
	srv, err := cuse.NewServer(k.Channel(), dev, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	r := &rig{k: k, srv: srv, dir: dir, serve: make(chan error, 1), ctx: ctx}
	go func() { r.serve <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		k.Close()
		cancel()
		require.Empty(t, k.Violations(), "protocol violations")
	})
	_, err = k.Init(ctx)
	require.NoError(t, err)
	select {
	case <-srv.Ready():
	case err := <-r.serve:
		t.Fatalf("Serve: %v", err)
	}
	return r
}

func TestInitHandshake(t *testing.T) {
	tests := []struct {
		name         string
		major, minor uint32
		opts         cuse.Options
		wantErr      bool
		wantMinor    uint32
		wantMaxWrite uint32
	}{
		{name: "debian 12 kernel", major: 7, minor: 38, wantMinor: cuse.OurMinor, wantMaxWrite: cuse.DefaultMaxIO},
		{name: "oldest CUSE minor", major: 7, minor: 11, wantMinor: 11, wantMaxWrite: cuse.DefaultMaxIO},
		{name: "smaller max_write", major: 7, minor: 38, opts: cuse.Options{MaxWrite: 16 << 10}, wantMinor: cuse.OurMinor, wantMaxWrite: 16 << 10},
		{name: "below the kernel floor", major: 7, minor: 38, opts: cuse.Options{MaxWrite: 100}, wantMinor: cuse.OurMinor, wantMaxWrite: cuse.MinMaxIO},
		{name: "minor too old", major: 7, minor: 10, wantErr: true},
		{name: "other major", major: 8, minor: 0, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			k, err := fakekernel.New(fakekernel.Config{Major: tt.major, Minor: tt.minor, DevDir: dir})
			require.NoError(t, err)
			defer k.Close()
			opts := tt.opts
			opts.Name = "tbstream7"
			opts.Node = cuse.NodeOptions{Dir: dir, SysClass: dir}
			srv, err := cuse.NewServer(k.Channel(), loopback.New(0), opts)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- srv.Init(ctx) }()
			reply, kerr := k.Init(ctx)
			if tt.wantErr {
				require.Error(t, kerr)
				require.Error(t, <-errc)
				require.NoFileExists(t, filepath.Join(dir, "tbstream7"))
				srv.Close()
				return
			}
			require.NoError(t, kerr)
			require.NoError(t, <-errc)
			require.Equal(t, uint32(7), reply.Out.Major)
			require.Equal(t, tt.wantMinor, reply.Out.Minor)
			require.Equal(t, uint32(cuse.DefaultMaxIO), reply.Out.MaxRead)
			require.Equal(t, tt.wantMaxWrite, reply.Out.MaxWrite)
			require.Zero(t, reply.Out.Flags, "no unrestricted ioctl")
			require.Zero(t, reply.Out.DevMajor, "dynamic major")
			require.Equal(t, map[string]string{"DEVNAME": "tbstream7"}, reply.DevInfo)
			// Serving after Init reads with the negotiated buffer rule.
			go func() { errc <- srv.Serve(context.Background()) }()
			fh, err := k.Open(ctx, syscall.O_RDWR)
			require.NoError(t, err)
			n, err := k.Write(ctx, fh, make([]byte, reply.MaxWrite), 0)
			require.NoError(t, err)
			require.Equal(t, reply.MaxWrite, n)
			srv.Close()
			require.NoError(t, <-errc)
			require.Empty(t, k.Violations())
		})
	}
}

func TestNodeModeAndRemoval(t *testing.T) {
	tests := []struct {
		name string
		mode os.FileMode
		want os.FileMode
	}{
		{name: "default like a misc device", want: 0o600},
		{name: "configured", mode: 0o660, want: 0o660},
		{name: "world", mode: 0o666, want: 0o666},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Root may give the node away; anyone may keep their own ids.
			uid, gid := os.Getuid(), os.Getgid()
			if uid == 0 {
				uid, gid = 1000, 6
			}
			r := start(t, loopback.New(0), cuse.Options{Node: cuse.NodeOptions{Mode: tt.mode, UID: uid, GID: gid}})
			path := filepath.Join(r.dir, "tbstream0")
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, tt.want, fi.Mode().Perm())
			st := fi.Sys().(*syscall.Stat_t)
			require.Equal(t, uint32(uid), st.Uid)
			require.Equal(t, uint32(gid), st.Gid)
			require.NoError(t, r.srv.Close())
			require.NoError(t, <-r.serve)
			require.Eventually(t, func() bool { _, err := os.Stat(path); return os.IsNotExist(err) },
				hangTimeout, 5*time.Millisecond, "node removed when the channel closes")
		})
	}
}

func TestRemoveNodeKeepsServing(t *testing.T) {
	r := start(t, loopback.New(0), cuse.Options{})
	fh, err := r.k.Open(r.ctx, syscall.O_RDWR)
	require.NoError(t, err)
	require.NoError(t, r.srv.RemoveNode())
	require.NoFileExists(t, filepath.Join(r.dir, "tbstream0"))
	_, err = r.k.Write(r.ctx, fh, []byte("still open"), 0)
	require.NoError(t, err, "open handles keep working")
}

func TestNodeMissing(t *testing.T) {
	dir := t.TempDir()
	k, err := fakekernel.New(fakekernel.Config{}) // no devtmpfs
	require.NoError(t, err)
	defer k.Close()
	srv, err := cuse.NewServer(k.Channel(), loopback.New(0), cuse.Options{Name: "tbstream0",
		Node: cuse.NodeOptions{Dir: dir, SysClass: dir, Wait: 50 * time.Millisecond}})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Init(context.Background()) }()
	_, err = k.Init(context.Background())
	require.NoError(t, err)
	require.ErrorContains(t, <-errc, "did not appear")
	srv.Close()
}

func TestBadName(t *testing.T) {
	for _, name := range []string{"", "a\x00b", "a=b"} {
		_, err := cuse.NewServer(nil, loopback.New(0), cuse.Options{Name: name})
		require.Error(t, err, "%q", name)
	}
}

func TestPipeRoundTrip(t *testing.T) {
	r := start(t, loopback.New(1<<16), cuse.Options{})
	k, ctx := r.k, r.ctx
	w, err := k.Open(ctx, syscall.O_WRONLY)
	require.NoError(t, err)
	rd, err := k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err)
	require.NotEqual(t, w, rd)

	msg := []byte("hello through the fake kernel")
	n, err := k.Write(ctx, w, msg, 0)
	require.NoError(t, err)
	require.Equal(t, len(msg), n)
	got, err := k.Read(ctx, rd, 5, 0)
	require.NoError(t, err)
	require.Equal(t, msg[:5], got)
	got, err = k.Read(ctx, rd, 4096, 0)
	require.NoError(t, err)
	require.Equal(t, msg[5:], got)

	require.NoError(t, k.Release(ctx, w))
	got, err = k.Read(ctx, rd, 4096, 0)
	require.NoError(t, err)
	require.Empty(t, got, "EOF once the last writer is gone")
	require.NoError(t, k.Release(ctx, rd))

	_, err = k.Read(ctx, rd, 10, 0)
	require.Equal(t, syscall.EBADF, fakekernel.Errno(err), "released fh")
}

func TestNonblocking(t *testing.T) {
	r := start(t, loopback.New(8), cuse.Options{})
	k, ctx := r.k, r.ctx
	fh, err := k.Open(ctx, syscall.O_RDWR)
	require.NoError(t, err)
	// O_NONBLOCK arrives per request (f_flags), not at open.
	_, err = k.Read(ctx, fh, 10, syscall.O_RDWR|syscall.O_NONBLOCK)
	require.Equal(t, syscall.EAGAIN, fakekernel.Errno(err))
	n, err := k.Write(ctx, fh, []byte("0123456789"), syscall.O_NONBLOCK)
	require.NoError(t, err)
	require.Equal(t, 8, n, "non-blocking write takes what fits")
	_, err = k.Write(ctx, fh, []byte("x"), syscall.O_NONBLOCK)
	require.Equal(t, syscall.EAGAIN, fakekernel.Errno(err))
	got, err := k.Read(ctx, fh, 10, syscall.O_NONBLOCK)
	require.NoError(t, err)
	require.Equal(t, []byte("01234567"), got)
	require.EqualValues(t, 2, r.srv.Stats().Again.Load())
}

// TestContinuedReadDoesNotWait: the second READ of one read(2) (offset >
// 0) returns at once with nothing instead of waiting for more bytes, so a
// large read(2) returns what is there, as from a pipe.
func TestContinuedReadDoesNotWait(t *testing.T) {
	r := start(t, loopback.New(0), cuse.Options{})
	k, ctx := r.k, r.ctx
	fh, err := k.Open(ctx, syscall.O_RDWR)
	require.NoError(t, err)
	c, err := k.Start(cuse.OpRead, fakekernel.ReadInAt(fh, cuse.DefaultMaxIO, cuse.DefaultMaxIO, 0), nil)
	require.NoError(t, err)
	rep, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Zero(t, rep.Errno)
	require.Empty(t, rep.Body, "an empty reply ends the read(2) with what it has")
	require.Zero(t, r.srv.Stats().Again.Load(), "not an EAGAIN the reader would see")

	_, err = k.Write(ctx, fh, []byte("more"), 0)
	require.NoError(t, err)
	c, err = k.Start(cuse.OpRead, fakekernel.ReadInAt(fh, cuse.DefaultMaxIO, cuse.DefaultMaxIO, 0), nil)
	require.NoError(t, err)
	rep, err = c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, []byte("more"), rep.Body)
}

// waitFor polls a condition that the server reaches asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, hangTimeout, time.Millisecond, what)
}

func TestInterruptBlockedReads(t *testing.T) {
	r := start(t, loopback.New(0), cuse.Options{})
	k, ctx := r.k, r.ctx
	fh, err := k.Open(ctx, syscall.O_RDWR)
	require.NoError(t, err)
	// More blocked READs than idle readers: INTERRUPT must still be read.
	const blocked = 6
	calls := make([]*fakekernel.Call, blocked)
	for i := range calls {
		calls[i], err = k.StartRead(fh, 100, 0)
		require.NoError(t, err)
	}
	waitFor(t, "reads in flight", func() bool { return r.srv.Stats().Reads.Load() == blocked })
	for _, c := range calls {
		require.NoError(t, k.Interrupt(c))
	}
	for _, c := range calls {
		rep, err := c.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, syscall.EINTR, rep.Errno)
	}
	require.EqualValues(t, blocked, r.srv.Stats().Interrupts.Load())
	// The device is still fine.
	_, err = k.Write(ctx, fh, []byte("ok"), 0)
	require.NoError(t, err)
}

func TestInterruptBeforeRequest(t *testing.T) {
	r := start(t, loopback.New(0), cuse.Options{})
	k, ctx := r.k, r.ctx
	fh, err := k.Open(ctx, syscall.O_RDWR)
	require.NoError(t, err)
	c := k.Reserve(cuse.OpRead)
	require.NoError(t, k.Interrupt(c))
	waitFor(t, "EAGAIN for an unknown target", func() bool { return r.srv.Stats().InterruptRetry.Load() > 0 })
	require.NoError(t, k.Send(c, fakekernel.ReadIn(fh, 100, 0), nil))
	rep, err := c.Wait(ctx)
	require.NoError(t, err)
	require.Equal(t, syscall.EINTR, rep.Errno, "the re-queued INTERRUPT cancels the READ once it is known")
}

func TestStaleReplyKeepsData(t *testing.T) {
	p := loopback.New(0)
	r := start(t, p, cuse.Options{})
	k, ctx := r.k, r.ctx
	rd, err := k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err)
	w, err := k.Open(ctx, syscall.O_WRONLY)
	require.NoError(t, err)
	c, err := k.StartRead(rd, 100, 0)
	require.NoError(t, err)
	waitFor(t, "read in flight", func() bool { return r.srv.Stats().Reads.Load() == 1 })
	k.Forget(c) // the caller died; the reply will get ENOENT
	_, err = k.Write(ctx, w, []byte("kept"), 0)
	require.NoError(t, err)
	waitFor(t, "stale reply", func() bool { return r.srv.Stats().Stale.Load() == 1 })
	got, err := k.Read(ctx, rd, 100, 0)
	require.NoError(t, err)
	require.Equal(t, []byte("kept"), got, "bytes of an undelivered reply stay in the device")
}

func TestPollNotify(t *testing.T) {
	r := start(t, loopback.New(4), cuse.Options{})
	k, ctx := r.k, r.ctx
	rd, err := k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err)
	w, err := k.Open(ctx, syscall.O_WRONLY)
	require.NoError(t, err)
	in := cuse.EventIn | cuse.EventOut

	rev, err := k.Poll(ctx, rd, 77, cuse.PollScheduleNotify, in)
	require.NoError(t, err)
	require.Equal(t, cuse.EventOut, rev, "empty pipe: writable only")

	_, err = k.Write(ctx, w, []byte("a"), 0)
	require.NoError(t, err)
	kh, _ := k.Notifications()
	require.Equal(t, []uint64{77}, kh, "a readiness change wakes the registered kh")

	_, err = k.Write(ctx, w, []byte("b"), 0)
	require.NoError(t, err)
	kh, _ = k.Notifications()
	require.Len(t, kh, 1, "one wake-up until the kernel polls again")

	rev, err = k.Poll(ctx, rd, 77, cuse.PollScheduleNotify, in)
	require.NoError(t, err)
	require.Equal(t, cuse.EventIn, rev&cuse.EventIn)
	_, next := k.Notifications()
	_, err = k.Read(ctx, rd, 10, 0)
	require.NoError(t, err)
	select { // the read's bytes leave the pipe after its reply is written
	case <-next:
	case <-ctx.Done():
		t.Fatal("no NOTIFY_POLL after a read freed space")
	}
	kh, _ = k.Notifications()
	require.Equal(t, []uint64{77, 77}, kh)

	// A poll that does not ask for notification registers nothing.
	rev, err = k.Poll(ctx, w, 99, 0, in)
	require.NoError(t, err)
	require.Equal(t, cuse.EventOut, rev&cuse.EventOut)
	require.NoError(t, k.Release(ctx, w))
	kh, _ = k.Notifications()
	require.Equal(t, []uint64{77, 77}, kh)

	rev, err = k.Poll(ctx, rd, 77, cuse.PollScheduleNotify, in)
	require.NoError(t, err)
	require.Equal(t, cuse.EventIn|cuse.EventHup, rev&(cuse.EventIn|cuse.EventHup), "hung up")
}

func TestIoctlAndUnknownOpcodes(t *testing.T) {
	r := start(t, loopback.New(0), cuse.Options{})
	k, ctx := r.k, r.ctx
	fh, err := k.Open(ctx, syscall.O_RDWR)
	require.NoError(t, err)
	require.Equal(t, syscall.ENOTTY, fakekernel.Errno(k.Ioctl(ctx, fh, 0x5401))) // TCGETS
	// Well-formed file-system requests a CUSE connection never gets: ENOSYS
	// (a malformed one would be EIO and counted as Malformed instead).
	for _, tt := range []struct {
		op   uint32
		body int
	}{{20 /* FSYNC */, 16}, {cuse.OpFlush, cuse.FlushInSize}, {cuse.OpLookup, 16}} {
		op := tt.op
		c, err := k.Start(op, make([]byte, tt.body), nil)
		require.NoError(t, err)
		rep, err := c.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, syscall.ENOSYS, rep.Errno, cuse.OpName(op))
	}
	require.EqualValues(t, 3, r.srv.Stats().Unknown.Load())
}

func TestMalformedRequests(t *testing.T) {
	r := start(t, loopback.New(0), cuse.Options{})
	k, ctx := r.k, r.ctx
	require.NoError(t, k.SendRaw([]byte{1, 2, 3}))
	// A READ whose header claims more bytes than were sent.
	bad := make([]byte, cuse.InHeaderSize+cuse.ReadInSize)
	bad[0] = 200
	bad[4] = byte(cuse.OpRead)
	require.NoError(t, k.SendRaw(bad))
	waitFor(t, "malformed requests counted", func() bool { return r.srv.Stats().Malformed.Load() == 2 })
	_, err := k.Open(ctx, syscall.O_RDONLY)
	require.NoError(t, err, "the server keeps serving")
}

func TestConnectionAbort(t *testing.T) {
	dev := &countingDevice{Device: loopback.New(0)}
	r := start(t, dev, cuse.Options{})
	_, err := r.k.Open(r.ctx, syscall.O_RDWR)
	require.NoError(t, err)
	require.NoError(t, r.k.Close())
	err = <-r.serve
	require.ErrorIs(t, err, syscall.ENODEV)
	require.EqualValues(t, 1, dev.released(), "handles the kernel can no longer release are released")
}

func TestShutdownReleasesAndCancels(t *testing.T) {
	dev := &countingDevice{Device: loopback.New(0)}
	r := start(t, dev, cuse.Options{})
	fh, err := r.k.Open(r.ctx, syscall.O_RDWR)
	require.NoError(t, err)
	_, err = r.k.StartRead(fh, 10, 0)
	require.NoError(t, err)
	waitFor(t, "read in flight", func() bool { return r.srv.Stats().Reads.Load() == 1 })
	require.NoError(t, r.srv.Close(), "Close does not wait for a blocked READ")
	require.NoError(t, <-r.serve)
	require.EqualValues(t, 1, dev.released())
}

// countingDevice counts releases.
type countingDevice struct {
	cuse.Device
	mu  sync.Mutex
	rel int
}

func (d *countingDevice) Open(ctx context.Context, req *cuse.OpenRequest) (cuse.Handle, error) {
	h, err := d.Device.Open(ctx, req)
	if err != nil {
		return nil, err
	}
	return &countingHandle{Handle: h, d: d}, nil
}

func (d *countingDevice) released() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rel
}

type countingHandle struct {
	cuse.Handle
	d *countingDevice
}

func (h *countingHandle) Release(ctx context.Context) {
	h.Handle.Release(ctx)
	h.d.mu.Lock()
	h.d.rel++
	h.d.mu.Unlock()
}

// errDevice fails opens with a fixed error.
type errDevice struct{ err error }

func (d errDevice) Open(context.Context, *cuse.OpenRequest) (cuse.Handle, error) { return nil, d.err }

func TestOpenErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{syscall.ENXIO, syscall.ENXIO},
		{syscall.EBUSY, syscall.EBUSY},
		{context.Canceled, syscall.EINTR},
		{errors.New("device bug"), syscall.EIO},
		{syscall.Errno(4000), syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			r := start(t, errDevice{tt.err}, cuse.Options{})
			_, err := r.k.Open(r.ctx, syscall.O_RDONLY)
			require.Equal(t, tt.want, fakekernel.Errno(err))
		})
	}
}
