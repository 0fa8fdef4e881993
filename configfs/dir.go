package configfs

import (
	"context"
	"sort"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirKind says which level of the tree a directory is.
type dirKind int

const (
	kindRoot   dirKind = iota // the configfs root: holds thunderbolt/
	kindSubsys                // thunderbolt/: holds stream/
	kindStream                // thunderbolt/stream/: holds the groups, mkdir makes one
	kindGroup                 // <domain>-<route>.<service>/: holds items, mkdir makes one
	kindItem                  // <name>/: holds the attribute files
)

// dir is every directory of the mount. What it may contain and what mkdir and rmdir do in
// it depend on its kind; everything configfs has no operation for is refused the same way
// at every level.
type dir struct {
	fs.Inode
	t     *tree
	kind  dirKind
	group *group // kindGroup
	item  *item  // kindItem
}

var (
	_ fs.NodeLookuper  = (*dir)(nil)
	_ fs.NodeReaddirer = (*dir)(nil)
	_ fs.NodeGetattrer = (*dir)(nil)
	_ fs.NodeSetattrer = (*dir)(nil)
	_ fs.NodeMkdirer   = (*dir)(nil)
	_ fs.NodeRmdirer   = (*dir)(nil)
	_ fs.NodeCreater   = (*dir)(nil)
	_ fs.NodeMknoder   = (*dir)(nil)
	_ fs.NodeUnlinker  = (*dir)(nil)
	_ fs.NodeRenamer   = (*dir)(nil)
	_ fs.NodeSymlinker = (*dir)(nil)
	_ fs.NodeLinker    = (*dir)(nil)
	_ fs.NodeStatfser  = (*dir)(nil)
)

// meta returns the directory's metadata. Caller holds t.mu.
func (d *dir) meta() *meta {
	switch d.kind {
	case kindRoot:
		return &d.t.root
	case kindSubsys:
		return &d.t.subsys
	case kindStream:
		return &d.t.stream
	case kindGroup:
		return &d.group.meta
	}
	return &d.item.meta
}

// child is one directory entry: its node (not yet in the FUSE tree) and metadata.
type child struct {
	node fs.InodeEmbedder
	meta *meta
}

// child returns the entry called name. Caller holds t.mu.
func (d *dir) child(name string) (child, bool) {
	t := d.t
	switch d.kind {
	case kindRoot:
		if name == "thunderbolt" {
			return child{&dir{t: t, kind: kindSubsys}, &t.subsys}, true
		}
	case kindSubsys:
		if name == "stream" {
			return child{&dir{t: t, kind: kindStream}, &t.stream}, true
		}
	case kindStream:
		if g := t.groups[name]; g != nil {
			return child{&dir{t: t, kind: kindGroup, group: g}, &g.meta}, true
		}
	case kindGroup:
		if it := d.group.items[name]; it != nil {
			return child{&dir{t: t, kind: kindItem, item: it}, &it.meta}, true
		}
	case kindItem:
		if a, ok := attrNamed(name); ok && !d.item.dead {
			return child{&attrNode{t: t, item: d.item, attr: a}, &d.item.attrs[a]}, true
		}
	}
	return child{}, false
}

// names lists the directory's entries in order. Caller holds t.mu.
func (d *dir) names() []string {
	switch d.kind {
	case kindRoot:
		return []string{"thunderbolt"}
	case kindSubsys:
		return []string{"stream"}
	case kindStream:
		return sortedNames(d.t.groups)
	case kindGroup:
		return sortedNames(d.group.items)
	}
	if d.item.dead {
		return nil
	}
	names := make([]string, 0, numAttrs)
	for a := range numAttrs {
		names = append(names, a.String())
	}
	sort.Strings(names)
	return names
}

// nlink is 2 plus the number of subdirectories, as for any Linux directory. Caller holds t.mu.
func (d *dir) nlink() uint32 {
	switch d.kind {
	case kindRoot, kindSubsys:
		return 3
	case kindStream:
		return 2 + uint32(len(d.t.groups))
	case kindGroup:
		return 2 + uint32(len(d.group.items))
	}
	return 2
}

func (d *dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d.t.mu.RLock()
	defer d.t.mu.RUnlock()
	c, ok := d.child(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return d.newChild(ctx, c, out), 0
}

// newChild makes the inode for c; when the kernel already holds one for the same inode
// number, go-fuse keeps that one. Caller holds t.mu.
func (d *dir) newChild(ctx context.Context, c child, out *fuse.EntryOut) *fs.Inode {
	if sub, ok := c.node.(*dir); ok {
		c.meta.fill(&out.Attr, 0, sub.nlink())
	} else {
		c.meta.fill(&out.Attr, attrPageSize, 1)
	}
	return d.NewInode(ctx, c.node, fs.StableAttr{Mode: c.meta.mode & syscall.S_IFMT, Ino: c.meta.ino})
}

func (d *dir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	d.t.mu.RLock()
	defer d.t.mu.RUnlock()
	entries := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: d.meta().ino},
		{Name: "..", Mode: syscall.S_IFDIR},
	}
	for _, name := range d.names() {
		c, _ := d.child(name)
		entries = append(entries, fuse.DirEntry{Name: name, Mode: c.meta.mode & syscall.S_IFMT, Ino: c.meta.ino})
	}
	return fs.NewListDirStream(entries), 0
}

func (d *dir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.t.mu.RLock()
	defer d.t.mu.RUnlock()
	d.meta().fill(&out.Attr, 0, d.nlink())
	return 0
}

func (d *dir) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	d.t.mu.Lock()
	defer d.t.mu.Unlock()
	d.meta().set(in)
	d.meta().fill(&out.Attr, 0, d.nlink())
	return 0
}

// Mkdir makes a group in stream/ and an item in a group. configfs ignores the mode asked
// for: its directories are always 0755. Anywhere else "lack-of-mkdir returns -EPERM".
func (d *dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var c child
	switch d.kind {
	case kindStream:
		g, errno := d.t.makeGroup(ctx, name)
		if errno != 0 {
			return nil, errno
		}
		c = child{&dir{t: d.t, kind: kindGroup, group: g}, &g.meta}
	case kindGroup:
		it, errno := d.t.makeItem(ctx, d.group, name)
		if errno != 0 {
			return nil, errno
		}
		c = child{&dir{t: d.t, kind: kindItem, item: it}, &it.meta}
	default:
		return nil, syscall.EPERM
	}
	d.t.mu.RLock()
	defer d.t.mu.RUnlock()
	return d.newChild(ctx, c, out), 0
}

// Rmdir removes a group or an item. thunderbolt/ and stream/ are the subsystem and its
// default group: EPERM. In an item, every entry is a file (the kernel answers ENOTDIR
// before asking; this is the same answer should it ask).
func (d *dir) Rmdir(ctx context.Context, name string) syscall.Errno {
	switch d.kind {
	case kindStream:
		return d.t.removeGroup(ctx, name)
	case kindGroup:
		return d.t.removeItem(ctx, d.group, name)
	case kindItem:
		return syscall.ENOTDIR
	}
	return syscall.EPERM
}

// configfs has no create, mknod, link or rename operations, and its unlink and symlink
// handle only item links, which the stream subsystem does not allow. The VFS's answers:
// EACCES for create, EPERM for the rest.

func (d *dir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EACCES
}

func (d *dir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (d *dir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (d *dir) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EPERM
}

func (d *dir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (d *dir) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (d *dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

// statfs answers as configfs's simple_statfs: page-sized blocks, 255-byte names, no counts.
func statfs(out *fuse.StatfsOut) {
	*out = fuse.StatfsOut{Bsize: attrPageSize, Frsize: attrPageSize, NameLen: 255}
}
