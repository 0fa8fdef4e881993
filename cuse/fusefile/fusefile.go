package fusefile

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"tbstream/cuse"
)

// File is one device file of the mount.
type File struct {
	Device cuse.Device
	// Mode is the permission bits (default 0600); UID and GID own the file.
	Mode     os.FileMode
	UID, GID uint32
}

// MaxIO is the largest request FUSE takes: 256 pages (the kernel's
// FUSE_MAX_MAX_PAGES), which go-fuse asks for with max_pages when MaxWrite
// is above 128 KiB. CUSE cannot raise its 128 KiB (cuse.DefaultMaxIO).
const MaxIO = 1 << 20

// Options configure the mount.
type Options struct {
	// MaxWrite bounds one READ or WRITE request (default MaxIO; at most
	// MaxIO). Fewer, larger requests are what makes a FUSE file fast: each
	// costs a round trip through the kernel.
	MaxWrite int
	// Name is the file system type suffix (fuse.NAME) and source (default
	// "tbstream").
	Name   string
	Logger *slog.Logger
	Debug  bool
}

// Mount serves files in dir (which must exist) until Unmount. It mounts
// with mount(2) directly (DirectMountStrict), so it needs root or
// CAP_SYS_ADMIN and no fusermount. Panics of its devices are logged and
// answered EIO, but counted only by a Dir (MountDir).
func Mount(dir string, files map[string]File, opts Options) (*fuse.Server, error) {
	return mount(dir, &rootNode{files: files}, opts)
}

// mount sets root's guard up and mounts it.
func mount(dir string, root *rootNode, opts Options) (*fuse.Server, error) {
	if opts.MaxWrite <= 0 || opts.MaxWrite > MaxIO {
		opts.MaxWrite = MaxIO
	}
	if opts.Name == "" {
		opts.Name = "tbstream"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	root.g = &guard{log: opts.Logger}
	zero := time.Duration(0)
	srv, err := fs.Mount(dir, root, &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			FsName:            opts.Name,
			Name:              opts.Name,
			MaxWrite:          opts.MaxWrite,
			DisableXAttrs:     true,
			Debug:             opts.Debug,
			Logger:            log.New(slogWriter{opts.Logger}, "", 0),
			// Other users may open a node as its mode and owner allow
			// (the kernel checks them: default_permissions), as with a
			// character device.
			AllowOther:   true,
			Options:      []string{"default_permissions"},
			PanicHandler: root.g.fusePanic,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return srv, nil
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}

type rootNode struct {
	fs.Inode
	files map[string]File
	g     *guard // shared by every node of the mount
}

var _ = (fs.NodeOnAdder)((*rootNode)(nil))

func (r *rootNode) OnAdd(ctx context.Context) {
	for name, f := range r.files {
		r.add(ctx, name, f)
	}
}

func (r *rootNode) add(ctx context.Context, name string, f File) bool {
	mode := f.Mode.Perm()
	if mode == 0 {
		mode = cuse.DefaultNodeMode
	}
	n := &fileNode{file: f, mode: uint32(mode), g: r.g}
	return r.AddChild(name, r.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG}), false)
}

type fileNode struct {
	fs.Inode
	file File
	mode uint32
	g    *guard
}

var (
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeSetattrer)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | n.mode
	out.Uid, out.Gid = n.file.UID, n.file.GID
	out.Nlink = 1
	return 0
}

// Setattr accepts the size-0 truncate of O_TRUNC and ignores it.
func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.Getattr(ctx, fh, out)
}

func callerOf(ctx context.Context) cuse.Caller {
	if c, ok := fuse.FromContext(ctx); ok {
		return cuse.Caller{UID: c.Uid, GID: c.Gid, PID: c.Pid}
	}
	return cuse.Caller{}
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	// O_NONBLOCK stays for the open itself (ENXIO instead of waiting for
	// a peer); reads and writes never see it (see the package doc).
	h, err := n.g.open(ctx, n.file.Device, &cuse.OpenRequest{Caller: callerOf(ctx), Flags: flags})
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	return &fileHandle{h: h, g: n.g}, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NONSEEKABLE | fuse.FOPEN_STREAM, 0
}

type fileHandle struct {
	h cuse.Handle
	g *guard
}

var (
	_ = (fs.FileReader)((*fileHandle)(nil))
	_ = (fs.FileWriter)((*fileHandle)(nil))
	_ = (fs.FileReleaser)((*fileHandle)(nil))
	_ = (fs.FileFlusher)((*fileHandle)(nil))
)

// Flush is FUSE's FLUSH, at each close(2) of a descriptor: a handle that
// is a cuse.Flusher may fail it (EIO for bytes that will not arrive).
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	fl, ok := f.h.(cuse.Flusher)
	if !ok {
		return 0
	}
	return errnoOf(f.g.flush(ctx, fl))
}

// Read blocks for the first request of a read(2) only: with FOPEN_STREAM
// the offset counts from 0 within each syscall, and a request at a
// non-zero offset continues one that already has data, so it takes what
// is there and an empty reply ends the syscall (as in the CUSE server).
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	var flags uint32
	if off > 0 {
		flags = syscall.O_NONBLOCK
	}
	res, err := f.g.read(ctx, f.h, &cuse.ReadRequest{Caller: callerOf(ctx), Size: len(dest), Flags: flags, MaxSlices: MaxReplySlices})
	if err != nil {
		f.g.done(res.Done, false)
		if off > 0 && errnoOf(err) == syscall.EAGAIN {
			return fuse.ReadResultData(nil), 0
		}
		return nil, errnoOf(err)
	}
	return &readResult{res: res, g: f.g}, 0
}

func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := f.g.write(ctx, f.h, &cuse.WriteRequest{Caller: callerOf(ctx), Data: [][]byte{data}})
	if err != nil && n == 0 {
		return 0, errnoOf(err)
	}
	return uint32(n), 0
}

func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	f.g.release(ctx, f.h)
	return 0
}

// MaxReplySlices bounds the slices of one READ reply: the reply header and
// the slices go to /dev/fuse in one writev(2), which takes at most IOV_MAX
// (1024) buffers.
const MaxReplySlices = 256

// readResult hands the device's slices to go-fuse. Its Slices method is the
// one go-fuse looks for (a vectored result): the reply then goes out by
// writev(2) from the device's memory, header and slices together, without
// a copy, and without go-fuse's splice attempt (which, for a result that is
// not a file descriptor, costs a pipe write and a discard per reply).
type readResult struct {
	res cuse.ReadResult
	g   *guard
}

var _ interface {
	Slices() ([][]byte, fuse.Status)
} = (*readResult)(nil)

// Slices returns the device's slices, or, from a device that ignored
// MaxSlices, one copy of them all.
func (r *readResult) Slices() ([][]byte, fuse.Status) {
	if len(r.res.Data) > MaxReplySlices {
		r.res.Data = [][]byte{r.gather(make([]byte, r.res.Len()))}
	}
	return r.res.Data, fuse.OK
}

// Bytes is for go-fuse's paths that want one buffer (none of them is taken
// with a vectored result today).
func (r *readResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(r.res.Data) == 1 {
		return r.res.Data[0], fuse.OK
	}
	return r.gather(buf), fuse.OK
}

func (r *readResult) gather(buf []byte) []byte {
	n := 0
	for _, b := range r.res.Data {
		n += copy(buf[n:], b)
	}
	return buf[:n]
}

func (r *readResult) Size() int { return r.res.Len() }

func (r *readResult) Done() { r.g.done(r.res.Done, true) }

// errnoOf maps a device error as the CUSE server does.
func errnoOf(err error) syscall.Errno {
	return cuse.Errno(err)
}
