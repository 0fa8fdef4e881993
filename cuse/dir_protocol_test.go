package cuse_test

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
	"tbstream/cuse/fakekernel"
	"tbstream/cuse/loopback"
)

// These tests play FUSE's kernel side with the fake kernel, to send what a
// real kernel never sends (truncated, inconsistent or unexpected
// requests): the server of a Dir must answer each with an errno, or drop
// and count it, never panic or stop serving. They need no root.

// fuseMsg builds a FUSE request: header for op, unique and node, then the
// body parts.
func fuseMsg(op uint32, unique, node uint64, body ...[]byte) []byte {
	b := make([]byte, cuse.InHeaderSize)
	for _, p := range body {
		b = append(b, p...)
	}
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(b)))
	le.PutUint32(b[4:], op)
	le.PutUint64(b[8:], unique)
	le.PutUint64(b[16:], node)
	return b
}

// initIn encodes struct fuse_init_in as a 7.45 kernel sends it (64 bytes).
func initIn(major, minor, readahead, flags uint32) []byte {
	b := make([]byte, 64)
	le := binary.LittleEndian
	le.PutUint32(b[0:], major)
	le.PutUint32(b[4:], minor)
	le.PutUint32(b[8:], readahead)
	le.PutUint32(b[12:], flags)
	return b
}

const (
	fuseAsyncRead = 1 << 0  // FUSE_ASYNC_READ
	fuseBigWrites = 1 << 5  // FUSE_BIG_WRITES
	fuseMaxPages  = 1 << 22 // FUSE_MAX_PAGES
	fuseRootID    = 1
)

type fuseRig struct {
	k     *fakekernel.Kernel
	srv   *cuse.Server
	dir   *cuse.Dir
	ctx   context.Context
	serve chan error
	logs  *logBuffer
}

// startFuse serves an empty Dir to the fake kernel and completes FUSE's
// INIT.
func startFuse(t *testing.T) *fuseRig {
	t.Helper()
	k, err := fakekernel.New(fakekernel.Config{})
	require.NoError(t, err)
	logs := &logBuffer{}
	srv, dir := cuse.NewDirServer(k.Channel(), cuse.Options{Name: "tbstream", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), dirGuard)
	r := &fuseRig{k: k, srv: srv, dir: dir, ctx: ctx, serve: make(chan error, 1), logs: logs}
	t.Cleanup(func() {
		srv.Close()
		k.Close()
		cancel()
		require.Empty(t, k.Violations(), "protocol violations")
	})
	initErr := make(chan error, 1)
	go func() { initErr <- srv.Init(ctx) }()
	rep := r.call(t, cuse.OpInit, 0, initIn(7, 45, 128<<10, fuseAsyncRead|fuseBigWrites|fuseMaxPages|1<<9))
	require.NoError(t, <-initErr)
	require.Zero(t, rep.Errno)
	require.Len(t, rep.Body, cuse.InitOutSize)
	le := binary.LittleEndian
	require.EqualValues(t, 7, le.Uint32(rep.Body[0:]), "major")
	require.EqualValues(t, cuse.OurMinor, le.Uint32(rep.Body[4:]), "minor")
	require.EqualValues(t, 128<<10, le.Uint32(rep.Body[8:]), "max_readahead as offered")
	require.EqualValues(t, fuseAsyncRead|fuseBigWrites|fuseMaxPages, le.Uint32(rep.Body[12:]), "flags: only those asked for and offered")
	require.EqualValues(t, cuse.MaxFuseIO, le.Uint32(rep.Body[20:]), "max_write")
	require.EqualValues(t, cuse.MaxFuseIO/4096, le.Uint16(rep.Body[28:]), "max_pages")
	go func() { r.serve <- srv.Serve(context.Background()) }()
	return r
}

// start sends a request and returns without waiting for the reply.
func (r *fuseRig) start(t *testing.T, op uint32, node uint64, body ...[]byte) *fakekernel.Call {
	t.Helper()
	return r.startRaw(t, op, func(unique uint64) []byte { return fuseMsg(op, unique, node, body...) })
}

// startRaw sends the message msg builds for the unique of a new call.
func (r *fuseRig) startRaw(t *testing.T, op uint32, msg func(unique uint64) []byte) *fakekernel.Call {
	t.Helper()
	c := r.k.Reserve(op)
	require.NoError(t, r.k.SendRaw(msg(c.Unique)))
	return c
}

func (r *fuseRig) wait(t *testing.T, c *fakekernel.Call) fakekernel.Reply {
	t.Helper()
	rep, err := c.Wait(r.ctx)
	require.NoError(t, err)
	return rep
}

// call sends a request and waits for its reply.
func (r *fuseRig) call(t *testing.T, op uint32, node uint64, body ...[]byte) fakekernel.Reply {
	t.Helper()
	return r.wait(t, r.start(t, op, node, body...))
}

// cname is a NUL-terminated name, as LOOKUP carries it.
func cname(s string) []byte { return append([]byte(s), 0) }

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// lookup returns the node id of name in the root.
func (r *fuseRig) lookup(t *testing.T, n string) uint64 {
	t.Helper()
	rep := r.call(t, cuse.OpLookup, fuseRootID, cname(n))
	require.Zero(t, rep.Errno, "LOOKUP %s", n)
	require.Len(t, rep.Body, cuse.EntryOutSize)
	return binary.LittleEndian.Uint64(rep.Body)
}

// open opens node and returns the fh.
func (r *fuseRig) open(t *testing.T, node uint64, flags uint32) uint64 {
	t.Helper()
	rep := r.call(t, cuse.OpOpen, node, u32(flags), u32(0))
	require.Zero(t, rep.Errno, "OPEN")
	require.Len(t, rep.Body, cuse.OpenOutSize)
	require.EqualValues(t, 1<<0|1<<2|1<<4, binary.LittleEndian.Uint32(rep.Body[8:]), "FOPEN_DIRECT_IO|FOPEN_NONSEEKABLE|FOPEN_STREAM")
	return binary.LittleEndian.Uint64(rep.Body)
}

// requireRoundTrip checks that the server still serves: a file added now
// is found, opened, written and read.
func (r *fuseRig) requireRoundTrip(t *testing.T, file string) {
	t.Helper()
	require.NoError(t, r.dir.Add(file, cuse.File{Device: loopback.New(0)}))
	node := r.lookup(t, file)
	fh := r.open(t, node, syscall.O_RDWR)
	rep := r.call(t, cuse.OpWrite, node, fakekernel.ReadIn(fh, 2, 0), []byte("ok"))
	n, err := fakekernel.WriteReply(rep)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	rep = r.call(t, cuse.OpRead, node, fakekernel.ReadIn(fh, 100, 0))
	require.Zero(t, rep.Errno)
	require.Equal(t, "ok", string(rep.Body))
	rep = r.call(t, cuse.OpRelease, node, binary.LittleEndian.AppendUint64(nil, fh), make([]byte, cuse.ReleaseInSize-8))
	require.Zero(t, rep.Errno)
}

// TestDirServerInit: the first request must be an INIT of 7.28 or later.
func TestDirServerInit(t *testing.T) {
	for _, tt := range []struct {
		name string
		op   uint32
		body []byte
	}{
		{"minor too old", cuse.OpInit, initIn(7, 27, 0, 0)},
		{"other major", cuse.OpInit, initIn(8, 0, 0, 0)},
		{"CUSE_INIT", cuse.OpCuseInit, make([]byte, cuse.CuseInitInSize)},
		{"not INIT", cuse.OpLookup, cname("x")},
		{"truncated INIT", cuse.OpInit, make([]byte, 8)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := fakekernel.New(fakekernel.Config{})
			require.NoError(t, err)
			defer k.Close()
			srv, _ := cuse.NewDirServer(k.Channel(), cuse.Options{Name: "tbstream"})
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), dirGuard)
			defer cancel()
			initErr := make(chan error, 1)
			go func() { initErr <- srv.Init(ctx) }()
			c := k.Reserve(tt.op)
			require.NoError(t, k.SendRaw(fuseMsg(tt.op, c.Unique, 0, tt.body)))
			select {
			case err := <-initErr:
				require.Error(t, err)
			case <-ctx.Done():
				t.Fatal("Init did not return")
			}
			if tt.op == cuse.OpInit && len(tt.body) >= cuse.InitInSize {
				rep, err := c.Wait(ctx)
				require.NoError(t, err)
				require.Equal(t, syscall.EPROTO, rep.Errno, "the kernel is told")
			}
		})
	}
}

// TestDirServerBadRequests sends requests a kernel never sends, each
// answered with the errno in the table (0: a reply of success), and
// checks what the server counted and that it serves on.
func TestDirServerBadRequests(t *testing.T) {
	r := startFuse(t)
	require.NoError(t, r.dir.Add("tbstream0", cuse.File{Device: loopback.New(0)}))
	node := r.lookup(t, "tbstream0")
	require.EqualValues(t, 2, node)

	short := func(op uint32, node uint64, body []byte, delta int) func(uint64) []byte {
		return func(unique uint64) []byte {
			m := fuseMsg(op, unique, node, body)
			binary.LittleEndian.PutUint32(m, uint32(len(m)+delta))
			return m
		}
	}
	readIn := fakekernel.ReadIn(1, 4096, 0)
	tests := []struct {
		name      string
		op        uint32
		msg       func(unique uint64) []byte
		want      syscall.Errno
		malformed bool
	}{
		{name: "LOOKUP in a file", op: cuse.OpLookup, want: syscall.ENOTDIR,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpLookup, u, node, cname("x")) }},
		{name: "LOOKUP of no name", op: cuse.OpLookup, want: syscall.ENOENT,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpLookup, u, fuseRootID) }},
		{name: "LOOKUP of a missing name", op: cuse.OpLookup, want: syscall.ENOENT,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpLookup, u, fuseRootID, cname("missing")) }},
		{name: "LOOKUP of a 64 KiB name without NUL", op: cuse.OpLookup, want: syscall.ENOENT,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpLookup, u, fuseRootID, make([]byte, 64<<10)) }},
		{name: "LOOKUP longer than sent", op: cuse.OpLookup, want: syscall.EIO, malformed: true,
			msg: short(cuse.OpLookup, fuseRootID, cname("tbstream0"), 4)},
		{name: "length field below the header", op: cuse.OpGetattr, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte {
				m := fuseMsg(cuse.OpGetattr, u, fuseRootID, make([]byte, cuse.GetattrInSize))
				binary.LittleEndian.PutUint32(m, 8)
				return m
			}},
		{name: "GETATTR of an unknown node", op: cuse.OpGetattr, want: syscall.ENOENT,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpGetattr, u, 99, make([]byte, cuse.GetattrInSize)) }},
		{name: "GETATTR truncated", op: cuse.OpGetattr, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpGetattr, u, fuseRootID, make([]byte, 8)) }},
		{name: "SETATTR of an unknown node", op: cuse.OpSetattr, want: syscall.ENOENT,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpSetattr, u, 99, make([]byte, 88)) }},
		{name: "OPEN of the root", op: cuse.OpOpen, want: syscall.EISDIR,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpOpen, u, fuseRootID, make([]byte, cuse.OpenInSize)) }},
		{name: "OPEN of an unknown node", op: cuse.OpOpen, want: syscall.ENOENT,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpOpen, u, 99, make([]byte, cuse.OpenInSize)) }},
		{name: "OPEN truncated", op: cuse.OpOpen, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpOpen, u, node, make([]byte, 4)) }},
		{name: "OPENDIR of a file", op: cuse.OpOpendir, want: syscall.ENOTDIR,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpOpendir, u, node, make([]byte, cuse.OpenInSize)) }},
		{name: "READDIR truncated", op: cuse.OpReaddir, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpReaddir, u, fuseRootID, readIn[:cuse.ReadInSize-1]) }},
		{name: "READ of an unknown fh", op: cuse.OpRead, want: syscall.EBADF,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpRead, u, node, fakekernel.ReadIn(77, 10, 0)) }},
		{name: "READ truncated", op: cuse.OpRead, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpRead, u, node, readIn[:8]) }},
		{name: "WRITE to an unknown fh", op: cuse.OpWrite, want: syscall.EBADF,
			msg: func(u uint64) []byte {
				return fuseMsg(cuse.OpWrite, u, node, fakekernel.ReadIn(77, 3, 0), []byte("abc"))
			}},
		{name: "WRITE size 10 with 3 bytes", op: cuse.OpWrite, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte {
				return fuseMsg(cuse.OpWrite, u, node, fakekernel.ReadIn(1, 10, 0), []byte("abc"))
			}},
		{name: "POLL of an unknown fh", op: cuse.OpPoll, want: syscall.EBADF,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpPoll, u, node, make([]byte, cuse.PollInSize)) }},
		{name: "FLUSH of an unknown fh", op: cuse.OpFlush, want: 0,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpFlush, u, node, make([]byte, cuse.FlushInSize)) }},
		{name: "FLUSH truncated", op: cuse.OpFlush, want: syscall.EIO, malformed: true,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpFlush, u, node, make([]byte, 8)) }},
		{name: "RELEASE of an unknown fh", op: cuse.OpRelease, want: 0,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpRelease, u, node, make([]byte, cuse.ReleaseInSize)) }},
		{name: "IOCTL", op: cuse.OpIoctl, want: syscall.ENOTTY,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpIoctl, u, node, make([]byte, cuse.IoctlInSize)) }},
		{name: "FSYNC", op: 20, want: syscall.ENOSYS,
			msg: func(u uint64) []byte { return fuseMsg(20, u, node, make([]byte, 16)) }},
		{name: "opcode 9999", op: 9999, want: syscall.ENOSYS,
			msg: func(u uint64) []byte { return fuseMsg(9999, u, node) }},
		{name: "second INIT", op: cuse.OpInit, want: syscall.EPROTO,
			msg: func(u uint64) []byte { return fuseMsg(cuse.OpInit, u, 0, initIn(7, 45, 0, 0)) }},
	}
	malformed := 0
	for _, tt := range tests {
		rep := r.wait(t, r.startRaw(t, tt.op, tt.msg))
		require.Equal(t, tt.want, rep.Errno, tt.name)
		if tt.malformed {
			malformed++
		}
	}

	// Requests that get no reply: FORGET (never answered), and what
	// cannot be answered (no header, unique 0, a malformed INTERRUPT).
	// A reply would reach the fake kernel as an ENOENT (no such request,
	// counted Stale) or, for unique 0, as a bad notification (a
	// violation).
	dropped := []*fakekernel.Call{
		r.start(t, cuse.OpForget, 99, make([]byte, cuse.ForgetInSize)),
		r.start(t, cuse.OpBatchForget, 0, u32(3), u32(0)), // count 3, no entries
	}
	require.NoError(t, r.k.SendRaw(make([]byte, 10)))
	malformed++
	require.NoError(t, r.k.SendRaw(fuseMsg(cuse.OpGetattr, 0, fuseRootID, make([]byte, cuse.GetattrInSize))))
	malformed++
	require.NoError(t, r.k.SendRaw(fuseMsg(cuse.OpInterrupt, 1001, 0, make([]byte, 4))))
	malformed++

	// BATCH_FORGET with a huge count and one entry: the entry is
	// applied (a removed file's node goes when its lookups are
	// forgotten), the count is not believed.
	r.dir.Remove("tbstream0")
	rep := r.call(t, cuse.OpGetattr, node, make([]byte, cuse.GetattrInSize))
	require.Zero(t, rep.Errno, "a removed file lives on while the kernel knows it")
	forget := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, node), 1<<40)
	dropped = append(dropped, r.start(t, cuse.OpBatchForget, 0, u32(1<<31), u32(0), forget))
	// BATCH_FORGET has no reply to wait for, and another reader may
	// serve the next request first: ask until the node is gone.
	for deadline := time.Now().Add(dirGuard); ; {
		rep := r.call(t, cuse.OpGetattr, node, make([]byte, cuse.GetattrInSize))
		if rep.Errno == syscall.ENOENT {
			break
		}
		require.Zero(t, rep.Errno)
		require.True(t, time.Now().Before(deadline), "the node was not forgotten")
		time.Sleep(time.Millisecond)
	}

	r.requireRoundTrip(t, "after")
	eventually(t, "malformed requests counted", func() bool { return r.srv.Stats().Malformed.Load() == uint64(malformed) })
	st := r.srv.Stats()
	require.Zero(t, st.Panics.Load(), "no panic, not even a recovered one")
	require.EqualValues(t, 2, st.Unknown.Load(), "FSYNC and opcode 9999")

	// When the server stops, the fake kernel fails what is still
	// pending with ECONNABORTED, after any reply the server made: the
	// dropped requests must have had none.
	require.NoError(t, r.srv.Close())
	for _, c := range dropped {
		rep := r.wait(t, c)
		require.Equal(t, syscall.ECONNABORTED, rep.Errno, "%s %d was answered", cuse.OpName(c.Op), c.Unique)
	}
	require.Zero(t, st.Stale.Load(), "no reply to a request that does not exist")
	require.NoError(t, <-r.serve)
}

// TestDirServerReaddir: READDIR lists ".", "..", then the files by name,
// resumes at an offset and stops at the size asked for.
func TestDirServerReaddir(t *testing.T) {
	r := startFuse(t)
	for _, n := range []string{"b", "a", "c"} {
		require.NoError(t, r.dir.Add(n, cuse.File{Device: loopback.New(0)}))
	}
	rep := r.call(t, cuse.OpOpendir, fuseRootID, make([]byte, cuse.OpenInSize))
	require.Zero(t, rep.Errno)
	type dirent struct {
		name string
		off  uint64
	}
	readdir := func(off uint64, size int) []dirent {
		rep := r.call(t, cuse.OpReaddir, fuseRootID, fakekernel.ReadInAt(0, off, size, 0))
		require.Zero(t, rep.Errno)
		var out []dirent
		b := rep.Body
		le := binary.LittleEndian
		for len(b) > 0 {
			require.GreaterOrEqual(t, len(b), cuse.DirentSize)
			n := int(le.Uint32(b[16:]))
			rec := (cuse.DirentSize + n + 7) &^ 7
			require.GreaterOrEqual(t, len(b), rec)
			out = append(out, dirent{string(b[cuse.DirentSize : cuse.DirentSize+n]), le.Uint64(b[8:])})
			b = b[rec:]
		}
		return out
	}
	require.Equal(t, []dirent{{".", 1}, {"..", 2}, {"a", 3}, {"b", 4}, {"c", 5}}, readdir(0, 4096))
	require.Equal(t, []dirent{{"b", 4}, {"c", 5}}, readdir(3, 4096), "resumed at an offset")
	require.Empty(t, readdir(5, 4096), "the end")
	require.Empty(t, readdir(1000, 4096), "past the end")
	require.Empty(t, readdir(0, 0), "no room")
	require.Equal(t, []dirent{{".", 1}, {"..", 2}}, readdir(0, 2*cuse.DirentSize+16), "as many as fit")
	rep = r.call(t, cuse.OpReleasedir, fuseRootID, make([]byte, cuse.ReleaseInSize))
	require.Zero(t, rep.Errno)
}

// TestDirServerParkedReadStale: a parked READ whose caller went away
// meanwhile (the kernel refuses its reply with ENOENT) leaves its bytes
// in the device (Done(false)) for the next READ.
func TestDirServerParkedReadStale(t *testing.T) {
	r := startFuse(t)
	require.NoError(t, r.dir.Add("tbstream0", cuse.File{Device: loopback.New(0)}))
	node := r.lookup(t, "tbstream0")
	rd := r.open(t, node, syscall.O_RDONLY)
	wr := r.open(t, node, syscall.O_WRONLY)
	c := r.start(t, cuse.OpRead, node, fakekernel.ReadIn(rd, 100, 0))
	eventually(t, "the READ parked", func() bool { return r.srv.Stats().Parked.Load() == 1 })
	r.k.Forget(c)
	n, err := fakekernel.WriteReply(r.call(t, cuse.OpWrite, node, fakekernel.ReadIn(wr, 4, 0), []byte("kept")))
	require.NoError(t, err)
	require.Equal(t, 4, n)
	eventually(t, "the stale reply", func() bool { return r.srv.Stats().Stale.Load() == 1 })
	rep := r.call(t, cuse.OpRead, node, fakekernel.ReadIn(rd, 100, 0))
	require.Zero(t, rep.Errno)
	require.Equal(t, "kept", string(rep.Body), "bytes of an undelivered reply stay in the device")
}

// TestDirServerGarbage sends mutated copies of well-formed requests
// (truncated, bytes flipped, length fields changed) and then requires a
// good round trip: the server neither panics (not even a recovered
// panic) nor stops serving.
func TestDirServerGarbage(t *testing.T) {
	r := startFuse(t)
	require.NoError(t, r.dir.Add("tbstream0", cuse.File{Device: loopback.New(0)}))
	node := r.lookup(t, "tbstream0")
	fh := r.open(t, node, syscall.O_RDWR)
	seeds := [][]byte{
		fuseMsg(cuse.OpLookup, 0, fuseRootID, cname("tbstream0")),
		fuseMsg(cuse.OpForget, 0, node, make([]byte, 8)),
		fuseMsg(cuse.OpBatchForget, 0, 0, u32(1), u32(0), make([]byte, 16)),
		fuseMsg(cuse.OpGetattr, 0, node, make([]byte, cuse.GetattrInSize)),
		fuseMsg(cuse.OpSetattr, 0, node, make([]byte, 88)),
		fuseMsg(cuse.OpStatfs, 0, fuseRootID),
		fuseMsg(cuse.OpOpendir, 0, fuseRootID, make([]byte, cuse.OpenInSize)),
		fuseMsg(cuse.OpReaddir, 0, fuseRootID, fakekernel.ReadIn(0, 4096, 0)),
		fuseMsg(cuse.OpReleasedir, 0, fuseRootID, make([]byte, cuse.ReleaseInSize)),
		fuseMsg(cuse.OpOpen, 0, node, u32(syscall.O_RDWR), u32(0)),
		fuseMsg(cuse.OpRead, 0, node, fakekernel.ReadIn(fh, 10, syscall.O_NONBLOCK)),
		fuseMsg(cuse.OpWrite, 0, node, fakekernel.ReadIn(fh, 3, 0), []byte("abc")),
		fuseMsg(cuse.OpPoll, 0, node, make([]byte, cuse.PollInSize)),
		fuseMsg(cuse.OpFlush, 0, node, make([]byte, cuse.FlushInSize)),
		fuseMsg(cuse.OpInterrupt, 0, 0, make([]byte, cuse.InterruptInSize)),
		fuseMsg(cuse.OpIoctl, 0, node, make([]byte, cuse.IoctlInSize)),
		fuseMsg(cuse.OpInit, 0, 0, initIn(7, 45, 0, 0)),
		fuseMsg(cuse.OpDestroy, 0, 0),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	le := binary.LittleEndian
	for i := range 3000 {
		m := append([]byte(nil), seeds[rng.IntN(len(seeds))]...)
		// A unique no call of the test uses: replies to it are stale.
		le.PutUint64(m[8:], 1<<40+uint64(i)*2)
		switch rng.IntN(5) {
		case 0: // truncated, length field kept
			m = m[:1+rng.IntN(len(m))]
		case 1: // truncated, length field matching
			m = m[:1+rng.IntN(len(m))]
			if len(m) >= 4 {
				le.PutUint32(m, uint32(len(m)))
			}
		case 2: // a byte flipped anywhere but the unique
			if j := rng.IntN(len(m)); j < 8 || j >= 16 {
				m[j] ^= byte(1 + rng.IntN(255))
			}
		case 3: // a body field flipped, lengths kept
			if len(m) > cuse.InHeaderSize {
				m[cuse.InHeaderSize+rng.IntN(len(m)-cuse.InHeaderSize)] = byte(rng.Uint32())
			}
		case 4: // a random length field
			le.PutUint32(m, rng.Uint32())
		}
		require.NoError(t, r.k.SendRaw(m))
	}
	r.requireRoundTrip(t, "after")
	require.Zero(t, r.srv.Stats().Panics.Load(), "no panic, not even a recovered one:\n%s", r.logs)
	require.Positive(t, r.srv.Stats().Malformed.Load())
}
