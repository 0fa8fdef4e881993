package configfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// attrNode is one attribute file of an item.
type attrNode struct {
	fs.Inode
	t    *tree
	item *item
	attr Attr
}

var (
	_ fs.NodeGetattrer = (*attrNode)(nil)
	_ fs.NodeSetattrer = (*attrNode)(nil)
	_ fs.NodeOpener    = (*attrNode)(nil)
	_ fs.NodeStatfser  = (*attrNode)(nil)
)

func (n *attrNode) meta() *meta { return &n.item.attrs[n.attr] }

func (n *attrNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.t.mu.RLock()
	defer n.t.mu.RUnlock()
	n.meta().fill(&out.Attr, attrPageSize, 1)
	return 0
}

func (n *attrNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	n.meta().set(in)
	n.meta().fill(&out.Attr, attrPageSize, 1)
	return 0
}

func (n *attrNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

// Open checks what configfs's open checks beyond the VFS's permission test, which root
// passes regardless of mode: a write open needs a write bit in the current mode and a
// store(), a read open a read bit. Reads and writes go around the page cache
// (FOPEN_DIRECT_IO) so that every one reaches show() and store().
func (n *attrNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.t.mu.RLock()
	mode := n.meta().mode
	n.t.mu.RUnlock()
	acc := flags & syscall.O_ACCMODE
	if acc != syscall.O_RDONLY && (mode&0o222 == 0 || !n.attr.writable()) {
		return nil, 0, syscall.EACCES
	}
	if acc != syscall.O_WRONLY && mode&0o444 == 0 {
		return nil, 0, syscall.EACCES
	}
	return &attrFile{node: n}, fuse.FOPEN_DIRECT_IO, 0
}

// attrFile is one open attribute, configfs's configfs_buffer: the text show() printed,
// filled by the first read after open or after a write, from which reads at any offset
// are served.
type attrFile struct {
	node *attrNode

	mu     sync.Mutex
	page   []byte
	filled bool
}

var (
	_ fs.FileReader   = (*attrFile)(nil)
	_ fs.FileWriter   = (*attrFile)(nil)
	_ fs.FileWritever = (*attrFile)(nil)
)

func (f *attrFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.filled {
		page, errno := f.node.t.show(ctx, f.node.item, f.node.attr)
		if errno != 0 {
			return nil, errno
		}
		f.page, f.filled = page, true
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(f.page)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(int64(len(f.page)), off+int64(len(dest)))
	return fuse.ReadResultData(f.page[off:end]), 0
}

// Write stores what one write(2) carried; the offset does not matter (`echo v >> attr`
// writes at the file size), as in configfs.
func (f *attrFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, errno := f.node.t.store(ctx, f.node.item, f.node.attr, data)
	if errno != 0 {
		return 0, errno
	}
	f.filled = false
	return n, 0
}

func (f *attrFile) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	var joined []byte
	for _, d := range data {
		joined = append(joined, d...)
	}
	return f.Write(ctx, joined, off)
}
