package configfs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// fill copies the metadata into a FUSE attribute. Caller holds tree.mu (shared).
func (m *meta) fill(out *fuse.Attr, size uint64, nlink uint32) {
	out.Ino = m.ino
	out.Mode = m.mode
	out.Owner = fuse.Owner{Uid: m.uid, Gid: m.gid}
	out.Size = size
	out.Nlink = nlink
	out.Blksize = attrPageSize
	out.SetTimes(&m.atime, &m.mtime, &m.ctime)
}

// set applies a SETATTR as configfs_setattr does: mode, owner and times are kept; a size
// change (the O_TRUNC of `echo v > attr`, or truncate(1)) is accepted and changes nothing.
// The kernel has already checked the caller's right to each change (default_permissions).
// Caller holds tree.mu.
func (m *meta) set(in *fuse.SetAttrIn) {
	if mode, ok := in.GetMode(); ok {
		m.mode = m.mode&syscall.S_IFMT | mode
	}
	if uid, ok := in.GetUID(); ok {
		m.uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		m.gid = gid
	}
	if t, ok := in.GetATime(); ok {
		m.atime = t
	}
	if t, ok := in.GetMTime(); ok {
		m.mtime = t
	}
	m.ctime = time.Now()
	if t, ok := in.GetCTime(); ok {
		m.ctime = t
	}
}

// touch records a change of a directory's entries.
func (m *meta) touch(now time.Time) { m.mtime, m.ctime = now, now }
