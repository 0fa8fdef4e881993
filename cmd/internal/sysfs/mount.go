package sysfs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// pageSize is the size every sysfs attribute reports.
const pageSize = 4096

// Options configure a mount.
type Options struct {
	Logger *slog.Logger
	// Debug logs every FUSE request.
	Debug bool
}

// Server is a mounted view.
type Server struct {
	dir    string
	src    Source
	server *fuse.Server
	stop   func() bool

	once sync.Once
	err  error
}

// Mount serves src's view on mountpoint (an existing directory):
// mountpoint/bus/thunderbolt is what /sys/bus/thunderbolt is on a kernel
// with thunderbolt_stream, mountpoint/module/thunderbolt_stream what
// /sys/module/thunderbolt_stream is. It mounts with mount(2) (no
// fusermount), so it needs CAP_SYS_ADMIN and /dev/fuse; a stale FUSE mount
// a killed daemon left on mountpoint is detached first. The mount is
// root's, world-readable, read-only, with nothing cached (zero entry,
// attribute and negative timeouts, direct I/O), and lasts until Unmount or
// ctx's end.
func Mount(ctx context.Context, mountpoint string, src Source, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if _, err := os.Stat(mountpoint); errors.Is(err, syscall.ENOTCONN) {
		logger.Warn("detaching a stale sysfs mount", "dir", mountpoint)
		if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
			return nil, fmt.Errorf("detach stale mount %s: %w", mountpoint, err)
		}
	}
	traceLevel := slog.LevelWarn
	if opts.Debug {
		traceLevel = slog.LevelInfo
	}
	traceLog := slog.NewLogLogger(logger.Handler(), traceLevel)
	var zero time.Duration
	fsOpts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:        true,
			Options:           []string{"default_permissions"},
			FsName:            "sysfs",
			Name:              "sysfs",
			DirectMountStrict: true, // mount(2) and umount(2) only: there is no fusermount
			DisableXAttrs:     true,
			Debug:             opts.Debug,
			Logger:            traceLog,
		},
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		Logger:          traceLog,
	}
	v := &view{src: src, mounted: time.Now()}
	server, err := fs.Mount(mountpoint, &node{v: v}, fsOpts)
	if err != nil {
		return nil, fmt.Errorf("mount sysfs view on %s: %w", mountpoint, err)
	}
	s := &Server{dir: mountpoint, src: src, server: server}
	s.stop = context.AfterFunc(ctx, func() {
		if err := s.unmount(); err != nil {
			logger.Error("unmount sysfs view", "dir", mountpoint, "err", err)
		}
	})
	return s, nil
}

// Attributes is Attributes of the source's state now.
func (s *Server) Attributes() map[string]map[string]string { return Attributes(s.src.State()) }

// Unmount unmounts and waits until the FUSE server has stopped; a busy
// mount is detached lazily and Unmount says so. Calling it again returns
// the first result.
func (s *Server) Unmount() error {
	s.stop()
	return s.unmount()
}

func (s *Server) unmount() error {
	s.once.Do(func() {
		err := s.server.Unmount()
		if err == nil {
			s.server.Wait()
			return
		}
		if derr := syscall.Unmount(s.dir, syscall.MNT_DETACH); derr != nil {
			s.err = fmt.Errorf("unmount sysfs view on %s: %w (lazy detach: %w)", s.dir, err, derr)
			return
		}
		s.err = fmt.Errorf("unmount sysfs view on %s: %w; detached lazily", s.dir, err)
	})
	return s.err
}

// view is the state shared by every node of a mount.
type view struct {
	src     Source
	mounted time.Time
}

// lookup builds the view now and finds path in it.
func (v *view) lookup(path string) *entry { return build(v.src.State()).find(path) }

// node is one path of the view. The entry behind it is looked up again
// at every operation: it may have gone, or changed.
type node struct {
	fs.Inode
	v    *view
	path string // "" for the root
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
)

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// ino is a stable inode number for a path and kind (never the root's 1).
func ino(path string, k kind) uint64 {
	h := fnv.New64a()
	h.Write([]byte(path))
	h.Write([]byte{byte(k >> 12)})
	n := h.Sum64()
	if n <= fuse.FUSE_ROOT_ID {
		n += 2
	}
	return n
}

func (n *node) fill(e *entry, out *fuse.Attr) {
	out.Mode = uint32(e.kind)
	switch e.kind {
	case kindDir:
		out.Mode |= 0o755
		out.Nlink = 2
	case kindFile:
		out.Mode |= e.perm
		out.Size = pageSize
		out.Nlink = 1
	case kindSymlink:
		out.Mode |= 0o777
		out.Size = uint64(len(e.text))
		out.Nlink = 1
	}
	out.Blksize = pageSize
	t := uint64(n.v.mounted.Unix())
	out.Atime, out.Mtime, out.Ctime = t, t, t
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	p := join(n.path, name)
	e := n.v.lookup(p)
	if e == nil {
		return nil, syscall.ENOENT
	}
	n.fill(e, &out.Attr)
	child := &node{v: n.v, path: p}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: uint32(e.kind), Ino: ino(p, e.kind)}), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	e := n.v.lookup(n.path)
	if e == nil || e.kind != kindDir {
		return nil, syscall.ENOENT
	}
	var list []fuse.DirEntry
	for _, name := range e.names() {
		c := e.sub[name]
		p := join(n.path, name)
		list = append(list, fuse.DirEntry{Name: name, Mode: uint32(c.kind), Ino: ino(p, c.kind)})
	}
	return fs.NewListDirStream(list), 0
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := n.v.lookup(n.path)
	if e == nil {
		return syscall.ENOENT
	}
	n.fill(e, &out.Attr)
	return 0
}

// Open takes the file's text as it is now, as sysfs fills a page at the
// first read. As kernfs, it refuses writes (EACCES: nothing here has a
// store method the view would honour) and reads of files without a show
// method.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	e := n.v.lookup(n.path)
	if e == nil {
		return nil, 0, syscall.ENOENT
	}
	if e.kind != kindFile {
		return nil, 0, syscall.EISDIR
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || e.perm&0o444 == 0 {
		return nil, 0, syscall.EACCES
	}
	return &handle{text: []byte(e.text)}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*handle)
	if !ok {
		return nil, syscall.EBADF
	}
	if off >= int64(len(h.text)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.text)))
	return fuse.ReadResultData(h.text[off:end]), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	e := n.v.lookup(n.path)
	if e == nil {
		return nil, syscall.ENOENT
	}
	if e.kind != kindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.text), 0
}

// handle is an open file: its text at open.
type handle struct{ text []byte }
