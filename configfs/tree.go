package configfs

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// tree is the authoritative model of the mount: which groups and items exist, their inode
// numbers and their inode metadata. The FUSE nodes are a view of it, so an inode the kernel
// forgets (drop_caches) is rebuilt from here on the next lookup.
type tree struct {
	backend Backend
	log     *slog.Logger
	panics  atomic.Uint64 // backend panics recovered (see guarded)

	// mu guards everything below and the meta of every group, item and attribute; it is
	// held across the backend's structural calls so that mkdir and rmdir are atomic.
	mu      sync.RWMutex
	nextIno uint64
	root    meta // the mount's root, the configfs root
	subsys  meta // thunderbolt/
	stream  meta // thunderbolt/stream/
	groups  map[string]*group
}

// meta is what stat shows of one node; configfs keeps it (s_iattr) for as long as the
// node exists, so chmod, chown and touch stick.
type meta struct {
	ino                 uint64
	mode                uint32 // file type and permission bits
	uid, gid            uint32
	atime, mtime, ctime time.Time
}

type group struct {
	meta
	name    GroupName
	backend Group
	items   map[string]*item
	dead    bool
}

type item struct {
	meta
	name    string
	backend Item
	attrs   [numAttrs]meta

	// frag is configfs's frag_sem: Show and Store hold it shared, removal exclusively, so
	// no Show or Store reaches a removed Item.
	frag sync.RWMutex
	dead bool
}

const (
	inoRoot   = fuse.FUSE_ROOT_ID
	inoSubsys = inoRoot + 1
	inoStream = inoRoot + 2
)

func newTree(backend Backend, log *slog.Logger) *tree {
	now := time.Now()
	t := &tree{backend: backend, log: log, nextIno: inoStream + 1, groups: map[string]*group{}}
	t.root = newMeta(inoRoot, syscall.S_IFDIR|0o755, now)
	t.subsys = newMeta(inoSubsys, syscall.S_IFDIR|0o755, now)
	t.stream = newMeta(inoStream, syscall.S_IFDIR|0o755, now)
	return t
}

func newMeta(ino uint64, mode uint32, now time.Time) meta {
	return meta{ino: ino, mode: mode, atime: now, mtime: now, ctime: now}
}

// allocIno hands out n consecutive inode numbers, never reused, so a node the kernel still
// holds from before an rmdir cannot be mistaken for its successor. Called with mu held.
func (t *tree) allocIno(n int) uint64 {
	ino := t.nextIno
	t.nextIno += uint64(n)
	return ino
}

// errno turns a backend error into what the user's syscall returns.
func (t *tree) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errno, ok := errnoOf(err); ok {
		return errno
	}
	t.log.Error("configfs backend failed", "op", op, "err", err)
	return syscall.EIO
}

func (t *tree) makeGroup(ctx context.Context, name string) (*group, syscall.Errno) {
	gn, err := parseGroupName(name)
	if err != nil {
		return nil, syscall.EINVAL
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.groups[name] != nil {
		return nil, syscall.EEXIST
	}
	op := "mkdir " + name
	bg, err := guarded(t, op, func() (Group, error) { return t.backend.MakeGroup(ctx, gn) })
	if errno := t.errno(op, err); errno != 0 {
		return nil, errno
	}
	if bg == nil {
		return nil, syscall.ENOMEM
	}
	now := time.Now()
	g := &group{meta: newMeta(t.allocIno(1), syscall.S_IFDIR|0o755, now), name: gn, backend: bg, items: map[string]*item{}}
	t.groups[name] = g
	t.stream.touch(now)
	return g, 0
}

func (t *tree) removeGroup(ctx context.Context, name string) syscall.Errno {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[name]
	switch {
	case g == nil:
		return syscall.ENOENT
	case len(g.items) > 0:
		return syscall.ENOTEMPTY
	}
	op := "rmdir " + name
	_, err := guarded(t, op, func() (struct{}, error) { return struct{}{}, g.backend.Remove(ctx) })
	if errno := t.errno(op, err); errno != 0 {
		return errno
	}
	g.dead = true
	delete(t.groups, name)
	t.stream.touch(time.Now())
	return 0
}

func (t *tree) makeItem(ctx context.Context, g *group, name string) (*item, syscall.Errno) {
	if len(name) > MaxStreamName {
		return nil, syscall.ENAMETOOLONG
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case g.dead:
		return nil, syscall.ENOENT
	case g.items[name] != nil:
		return nil, syscall.EEXIST
	}
	op := "mkdir " + g.name.Name + "/" + name
	bi, err := guarded(t, op, func() (Item, error) { return g.backend.MakeItem(ctx, name) })
	if errno := t.errno(op, err); errno != 0 {
		return nil, errno
	}
	if bi == nil {
		return nil, syscall.ENOMEM
	}
	now := time.Now()
	ino := t.allocIno(1 + int(numAttrs))
	it := &item{meta: newMeta(ino, syscall.S_IFDIR|0o755, now), name: name, backend: bi}
	for a := range numAttrs {
		it.attrs[a] = newMeta(ino+1+uint64(a), syscall.S_IFREG|a.defaultMode(), now)
	}
	g.items[name] = it
	g.touch(now)
	return it, 0
}

func (t *tree) removeItem(ctx context.Context, g *group, name string) syscall.Errno {
	t.mu.Lock()
	defer t.mu.Unlock()
	it := g.items[name]
	if it == nil {
		return syscall.ENOENT
	}
	it.frag.Lock()
	defer it.frag.Unlock()
	op := "rmdir " + g.name.Name + "/" + name
	_, err := guarded(t, op, func() (struct{}, error) { return struct{}{}, it.backend.Remove(ctx) })
	if errno := t.errno(op, err); errno != 0 {
		return errno
	}
	it.dead = true
	delete(g.items, name)
	g.touch(time.Now())
	return 0
}

// show reads an attribute through the backend; ENOENT once the item is gone, as configfs
// answers an open file of a removed item.
func (t *tree) show(ctx context.Context, it *item, a Attr) ([]byte, syscall.Errno) {
	it.frag.RLock()
	defer it.frag.RUnlock()
	if it.dead {
		return nil, syscall.ENOENT
	}
	op := "show " + it.name + "/" + a.String()
	v, err := guarded(t, op, func() (int64, error) { return it.backend.Show(ctx, a) })
	if errno := t.errno(op, err); errno != 0 {
		return nil, errno
	}
	return a.show(v), 0
}

// store runs one write(2) of an attribute: the first attrPageSize-1 bytes are parsed and
// stored, and their count is the write's result, as configfs's fill_write_buffer does.
func (t *tree) store(ctx context.Context, it *item, a Attr, data []byte) (uint32, syscall.Errno) {
	if len(data) >= attrPageSize {
		data = data[:attrPageSize-1]
	}
	it.frag.RLock()
	defer it.frag.RUnlock()
	if it.dead {
		return 0, syscall.ENOENT
	}
	v, errno := a.parse(data)
	if errno != 0 {
		return 0, errno
	}
	op := "store " + it.name + "/" + a.String()
	_, err := guarded(t, op, func() (struct{}, error) { return struct{}{}, it.backend.Store(ctx, a, v) })
	if errno := t.errno(op, err); errno != 0 {
		return 0, errno
	}
	return uint32(len(data)), 0
}

// sortedNames lists a map's keys in order, for stable directory listings.
func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
