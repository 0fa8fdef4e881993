package cuse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// The file-system part of a FUSE mount of device files (Dir): one flat
// directory, node 1, whose regular files each serve a Device. It answers
// what the kernel sends to find, list and stat them; OPEN and everything
// after it are the device path that CUSE shares (dispatch.go).

// rootID is FUSE_ROOT_ID.
const rootID = 1

// File is one device file of a Dir.
type File struct {
	Device Device
	// Mode is the permission bits (default DefaultNodeMode); UID and GID
	// own the file. The kernel checks them (default_permissions), as for
	// a device node.
	Mode     os.FileMode
	UID, GID uint32
}

// tree is the directory's state: names come and go while the mount lives
// (Add, Remove), nodes live until the kernel forgets them.
type tree struct {
	mu    sync.Mutex
	nodes map[uint64]*fsNode // by node id; the root is not here
	names map[string]*fsNode // the files there now
	next  uint64             // last node id given out
	born  time.Time          // the directory's times
}

// fsNode is one file. A removed file's node lives on while the kernel
// holds lookups of it (an open file), so fstat still works.
type fsNode struct {
	id      uint64
	name    string
	file    File
	lookups uint64
	removed bool
}

func newTree() *tree {
	return &tree{nodes: map[uint64]*fsNode{}, names: map[string]*fsNode{}, next: rootID, born: time.Now()}
}

func (t *tree) add(name string, f File) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 || slices.Contains([]byte(name), '/') || slices.Contains([]byte(name), 0) {
		return fmt.Errorf("add %q: %w", name, syscall.EINVAL)
	}
	if f.Device == nil {
		return fmt.Errorf("add %q: no device: %w", name, syscall.EINVAL)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.names[name] != nil {
		return fmt.Errorf("add %s: %w", name, syscall.EEXIST)
	}
	t.next++
	n := &fsNode{id: t.next, name: name, file: f}
	t.nodes[n.id] = n
	t.names[name] = n
	return nil
}

func (t *tree) remove(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.names[name]
	if n == nil {
		return
	}
	delete(t.names, name)
	n.removed = true
	if n.lookups == 0 {
		delete(t.nodes, n.id)
	}
}

// forget drops k lookups of node id.
func (t *tree) forget(id, k uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[id]
	if n == nil {
		return
	}
	n.lookups -= min(k, n.lookups)
	if n.removed && n.lookups == 0 {
		delete(t.nodes, id)
	}
}

// device returns the device of node id (nil for the root or a node the
// kernel should not know).
func (t *tree) device(id uint64) Device {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.nodes[id]; n != nil {
		return n.file.Device
	}
	return nil
}

// putAttr encodes struct fuse_attr of node id; false if there is none.
func (t *tree) putAttr(b []byte, id uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	le := binary.LittleEndian
	clear(b[:AttrSize])
	sec, nsec := uint64(t.born.Unix()), uint32(t.born.Nanosecond())
	le.PutUint64(b[0:], id)
	for _, off := range []int{24, 32, 40} { // atime, mtime, ctime
		le.PutUint64(b[off:], sec)
	}
	for _, off := range []int{48, 52, 56} {
		le.PutUint32(b[off:], nsec)
	}
	le.PutUint32(b[80:], 4096) // blksize
	if id == rootID {
		le.PutUint32(b[60:], syscall.S_IFDIR|0o755)
		le.PutUint32(b[64:], 2) // nlink
		return true
	}
	n := t.nodes[id]
	if n == nil {
		return false
	}
	mode := uint32(n.file.Mode.Perm())
	if mode == 0 {
		mode = uint32(DefaultNodeMode)
	}
	le.PutUint32(b[60:], syscall.S_IFREG|mode)
	le.PutUint32(b[64:], 1)
	le.PutUint32(b[68:], n.file.UID)
	le.PutUint32(b[72:], n.file.GID)
	return true
}

// lookup finds name in the root and counts the lookup.
func (t *tree) lookup(name string) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.names[name]
	if n == nil {
		return 0, false
	}
	n.lookups++
	return n.id, true
}

// list returns the directory's entries from index off on: ".", "..",
// then the files by name.
func (t *tree) list(off uint64) []dirent {
	t.mu.Lock()
	ents := []dirent{{rootID, ".", syscall.DT_DIR}, {rootID, "..", syscall.DT_DIR}}
	for name, n := range t.names {
		ents = append(ents, dirent{n.id, name, syscall.DT_REG})
	}
	t.mu.Unlock()
	slices.SortFunc(ents[2:], func(a, b dirent) int {
		if a.name < b.name {
			return -1
		}
		return 1
	})
	if off >= uint64(len(ents)) {
		return nil
	}
	return ents[off:]
}

type dirent struct {
	ino  uint64
	name string
	typ  uint32
}

// fsRequest answers the file-system opcodes; false for an opcode that is
// not one of them.
func (s *Server) fsRequest(ctx context.Context, req *Request, body []byte) bool {
	h := &req.Header
	switch h.Opcode {
	case OpLookup:
		s.fsLookup(req, body)
	case OpForget:
		s.fs.forget(h.NodeId, req.Forget) // never answered
	case OpBatchForget:
		if len(body) < BatchForgetSize {
			break
		}
		count := int(binary.LittleEndian.Uint32(body))
		for i := 0; i < count && BatchForgetSize+16*(i+1) <= len(body); i++ {
			e := body[BatchForgetSize+16*i:]
			s.fs.forget(binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint64(e[8:]))
		}
	case OpGetattr, OpSetattr:
		// SETATTR comes from O_TRUNC (a size-0 truncate): accepted and
		// ignored, as a character device would.
		out := make([]byte, OutHeaderSize+AttrOutSize)
		if !s.fs.putAttr(out[OutHeaderSize+16:], h.NodeId) {
			s.reply(h.Unique, syscall.ENOENT)
			return true
		}
		putOutHeader(out, len(out), 0, h.Unique)
		s.send(out)
	case OpStatfs:
		out := make([]byte, OutHeaderSize+StatfsOutSize)
		le := binary.LittleEndian
		le.PutUint32(out[OutHeaderSize+40:], 4096) // bsize
		le.PutUint32(out[OutHeaderSize+44:], 255)  // namelen
		le.PutUint32(out[OutHeaderSize+48:], 4096) // frsize
		putOutHeader(out, len(out), 0, h.Unique)
		s.send(out)
	case OpOpendir:
		if h.NodeId != rootID {
			s.reply(h.Unique, syscall.ENOTDIR)
			return true
		}
		out := make([]byte, OutHeaderSize+OpenOutSize) // fh 0: the listing is made per READDIR
		putOutHeader(out, len(out), 0, h.Unique)
		s.send(out)
	case OpReaddir:
		s.fsReaddir(req)
	case OpReleasedir:
		s.reply(h.Unique, 0)
	case OpFlush:
		s.flush(ctx, req)
	case OpDestroy:
		s.reply(h.Unique, 0)
	case OpInit:
		s.log.Warn("second INIT")
		s.reply(h.Unique, syscall.EPROTO)
	default:
		return false
	}
	return true
}

func (s *Server) fsLookup(req *Request, name []byte) {
	h := &req.Header
	if i := slices.Index(name, 0); i >= 0 {
		name = name[:i]
	}
	if h.NodeId != rootID {
		s.reply(h.Unique, syscall.ENOTDIR)
		return
	}
	id, ok := s.fs.lookup(string(name))
	if !ok {
		s.reply(h.Unique, syscall.ENOENT)
		return
	}
	out := make([]byte, OutHeaderSize+EntryOutSize)
	binary.LittleEndian.PutUint64(out[OutHeaderSize:], id)
	// generation, entry and attr validity 0: every path walk asks again,
	// so a removed file is gone at once.
	if !s.fs.putAttr(out[OutHeaderSize+40:], id) {
		s.fs.forget(id, 1)
		s.reply(h.Unique, syscall.ENOENT)
		return
	}
	putOutHeader(out, len(out), 0, h.Unique)
	if s.send(out) != nil {
		s.fs.forget(id, 1) // the kernel did not take the entry
	}
}

func (s *Server) fsReaddir(req *Request) {
	h := &req.Header
	size := int(min(req.Read.Size, MaxFuseIO))
	out := make([]byte, OutHeaderSize, OutHeaderSize+size)
	le := binary.LittleEndian
	off := req.Read.Offset
	for _, e := range s.fs.list(off) {
		rec := (DirentSize + len(e.name) + 7) &^ 7
		if len(out)-OutHeaderSize+rec > size {
			break
		}
		off++
		b := make([]byte, rec)
		le.PutUint64(b[0:], e.ino)
		le.PutUint64(b[8:], off)
		le.PutUint32(b[16:], uint32(len(e.name)))
		le.PutUint32(b[20:], e.typ)
		copy(b[DirentSize:], e.name)
		out = append(out, b...)
	}
	putOutHeader(out, len(out), 0, h.Unique)
	s.send(out)
}

// flush is FUSE's FLUSH, at every close(2) of a descriptor: a handle that
// is a Flusher may fail it (EIO for bytes that will not arrive).
func (s *Server) flush(ctx context.Context, req *Request) {
	var err error
	if oh := s.handleOf(req.Flush.Fh); oh != nil {
		if fl, ok := oh.h.(Flusher); ok {
			err = s.devFlush(ctx, fl)
		}
	}
	s.reply(req.Header.Unique, s.errno(err, "flush"))
}

// initFuse answers FUSE_INIT: 7.min(kernel, OurMinor), requests of up to
// maxRead/maxWrite bytes (max_pages to match), asynchronous reads.
func (s *Server) initFuse(req *Request) error {
	if req.Init.Major != KernelVersion || req.Init.Minor < OurMinor {
		s.reply(req.Header.Unique, syscall.EPROTO)
		return fmt.Errorf("%s: kernel offers FUSE %d.%d, need %d.%d or later",
			s.opts.Name, req.Init.Major, req.Init.Minor, KernelVersion, OurMinor)
	}
	out := make([]byte, OutHeaderSize+InitOutSize)
	b := out[OutHeaderSize:]
	le := binary.LittleEndian
	le.PutUint32(b[0:], KernelVersion)
	le.PutUint32(b[4:], OurMinor)
	le.PutUint32(b[8:], req.Init.MaxReadahead)
	le.PutUint32(b[12:], req.Init.Flags&(initAsyncRead|initBigWrites|initMaxPages))
	le.PutUint32(b[20:], uint32(s.maxWrite))
	le.PutUint32(b[24:], 1)                                              // time_gran
	le.PutUint16(b[28:], uint16((max(s.maxRead, s.maxWrite)+4095)/4096)) // max_pages
	putOutHeader(out, len(out), 0, req.Header.Unique)
	if err := s.ch.WriteReply([][]byte{out}); err != nil {
		return fmt.Errorf("%s: INIT reply: %w", s.opts.Name, err)
	}
	s.log.Debug("FUSE_INIT", "kernel", fmt.Sprintf("%d.%d", req.Init.Major, req.Init.Minor), "flags", req.Init.Flags)
	return nil
}

// notifyInvalEntry is FUSE_NOTIFY_INVAL_ENTRY.
const notifyInvalEntry = 3

// invalEntry tells the kernel to forget its entry for name in the root:
// entries are valid for 0 s, but the kernel trusts one for the rest of
// the jiffy it was made in, so a file removed and made again at once
// could otherwise be opened through the old node. ENOENT (no such entry
// cached) is the usual answer.
func (s *Server) invalEntry(name string) {
	msg := make([]byte, OutHeaderSize+16+len(name)+1)
	le := binary.LittleEndian
	putOutHeader(msg, len(msg), notifyInvalEntry, 0)
	le.PutUint64(msg[OutHeaderSize:], rootID)
	le.PutUint32(msg[OutHeaderSize+8:], uint32(len(name)))
	copy(msg[OutHeaderSize+16:], name)
	if err := s.ch.WriteReply([][]byte{msg}); err != nil && !errors.Is(err, syscall.ENOENT) && s.ctx.Err() == nil {
		s.log.Debug("invalidate entry", "name", name, "err", err)
	}
}
