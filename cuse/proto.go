package cuse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcodes (fuse_kernel.h, enum fuse_opcode). A CUSE connection sees only
// OPEN, READ, WRITE, RELEASE, INTERRUPT, IOCTL, POLL and CUSE_INIT
// (cuse_frontend_fops has no flush, fsync, mmap or splice); a FUSE mount
// of device files (Dir) sees the file-system ones too.
const (
	OpLookup      uint32 = 1
	OpForget      uint32 = 2
	OpGetattr     uint32 = 3
	OpSetattr     uint32 = 4
	OpOpen        uint32 = 14
	OpRead        uint32 = 15
	OpWrite       uint32 = 16
	OpStatfs      uint32 = 17
	OpRelease     uint32 = 18
	OpFlush       uint32 = 25
	OpInit        uint32 = 26
	OpOpendir     uint32 = 27
	OpReaddir     uint32 = 28
	OpReleasedir  uint32 = 29
	OpInterrupt   uint32 = 36
	OpDestroy     uint32 = 38
	OpIoctl       uint32 = 39
	OpPoll        uint32 = 40
	OpBatchForget uint32 = 42
	OpCuseInit    uint32 = 4096
)

// Protocol constants (fuse_kernel.h, fs/fuse/cuse.c, fs/fuse/inode.c).
const (
	// KernelVersion is the only major version the kernel accepts.
	KernelVersion = 7
	// MinKernelMinor is the lowest minor cuse_process_init_reply accepts.
	MinKernelMinor = 11
	// OurMinor is the protocol minor this server speaks: the layouts of
	// every struct below are those of 7.28 and unchanged since (max_pages
	// in fuse_init_out came with 7.28).
	OurMinor = 28

	// DefaultMaxIO is CUSE's max_read and max_write: CUSE cannot raise
	// fc->max_pages above FUSE_DEFAULT_MAX_PAGES_PER_REQ (32 pages), so
	// more buys nothing.
	DefaultMaxIO = 128 << 10
	// MaxFuseIO is the largest request a FUSE mount takes: 256 pages
	// (FUSE_MAX_MAX_PAGES), asked for with FUSE_MAX_PAGES at FUSE_INIT.
	MaxFuseIO = 1 << 20
	// MinMaxIO is the floor the kernel applies to max_read and max_write.
	MinMaxIO = 4096
	// MinReadBuffer is FUSE_MIN_READ_BUFFER: the kernel refuses (EINVAL) a
	// read of the channel into anything smaller than
	// max(MinReadBuffer, InHeaderSize+WriteInBodySize+max_write).
	MinReadBuffer = 8192
	// MaxInfoSize is CUSE_INIT_INFO_MAX, the limit of the devinfo block.
	MaxInfoSize = 4096

	// NotifyPoll is FUSE_NOTIFY_POLL, the positive code a notification
	// carries in the out header's error field.
	NotifyPoll = 1
	// PollScheduleNotify is FUSE_POLL_SCHEDULE_NOTIFY in PollIn.Flags: a
	// waiter exists, so send NOTIFY_POLL for Kh when readiness changes.
	PollScheduleNotify = 1 << 0
	// ReadLockOwner is FUSE_READ_LOCKOWNER (unused here, listed for the printer).
	ReadLockOwner = 1 << 1

	// FUSE_INIT flags this server asks for.
	initAsyncRead = 1 << 0  // FUSE_ASYNC_READ
	initBigWrites = 1 << 5  // FUSE_BIG_WRITES
	initMaxPages  = 1 << 22 // FUSE_MAX_PAGES: fuse_init_out.max_pages is valid

	// fuse_open_out.open_flags for a device file: every read(2) and
	// write(2) reaches the server (no page cache), with no file position.
	openDirectIO    = 1 << 0 // FOPEN_DIRECT_IO
	openNonseekable = 1 << 2 // FOPEN_NONSEEKABLE
	openStream      = 1 << 4 // FOPEN_STREAM
)

// Encoded sizes of the wire structs (fuse_kernel.h), pinned by proto_test.go.
const (
	InHeaderSize     = 40 // struct fuse_in_header
	OutHeaderSize    = 16 // struct fuse_out_header
	CuseInitInSize   = 16 // struct cuse_init_in
	CuseInitOutSize  = 72 // struct cuse_init_out
	InitInSize       = 16 // struct fuse_init_in up to flags (7.36 adds flags2 and 44 unused bytes)
	InitOutSize      = 64 // struct fuse_init_out
	OpenInSize       = 8  // struct fuse_open_in
	OpenOutSize      = 16 // struct fuse_open_out
	ReadInSize       = 40 // struct fuse_read_in
	WriteInSize      = 40 // struct fuse_write_in
	WriteOutSize     = 8  // struct fuse_write_out
	ReleaseInSize    = 24 // struct fuse_release_in
	FlushInSize      = 24 // struct fuse_flush_in
	ForgetInSize     = 8  // struct fuse_forget_in
	BatchForgetSize  = 8  // struct fuse_batch_forget_in (then count fuse_forget_one of 16)
	GetattrInSize    = 16 // struct fuse_getattr_in
	InterruptInSize  = 8  // struct fuse_interrupt_in
	IoctlInSize      = 32 // struct fuse_ioctl_in
	IoctlOutSize     = 16 // struct fuse_ioctl_out
	PollInSize       = 24 // struct fuse_poll_in
	PollOutSize      = 8  // struct fuse_poll_out
	NotifyPollOutLen = 8  // struct fuse_notify_poll_wakeup_out
	AttrSize         = 88 // struct fuse_attr
	AttrOutSize      = 16 + AttrSize
	EntryOutSize     = 40 + AttrSize
	StatfsOutSize    = 80 // struct fuse_statfs_out
	DirentSize       = 24 // struct fuse_dirent without its name

	// RequestHeadSize is the largest fixed part of any request we serve
	// (header plus fuse_write_in); a WRITE payload starts right after it.
	RequestHeadSize = InHeaderSize + WriteInSize
)

// ErrShort is returned by the decoders when a message is shorter than its
// header says or than its opcode's fixed part.
var ErrShort = errors.New("cuse: short message")

// InHeader is struct fuse_in_header.
type InHeader struct {
	Length, Opcode uint32
	Unique, NodeId uint64
	Uid, Gid, Pid  uint32
	TotalExtlen    uint16
	Padding        uint16
}

// OutHeader is struct fuse_out_header; Error is the negated errno (or a
// notification code with Unique 0).
type OutHeader struct {
	Length uint32
	Error  int32
	Unique uint64
}

// CuseInitIn is struct cuse_init_in.
type CuseInitIn struct {
	Major, Minor, Unused, Flags uint32
}

// CuseInitOut is struct cuse_init_out.
type CuseInitOut struct {
	Major, Minor, Unused, Flags uint32
	MaxRead, MaxWrite           uint32
	DevMajor, DevMinor          uint32
	Spare                       [10]uint32
}

// InitIn is the part of struct fuse_init_in this server reads.
type InitIn struct {
	Major, Minor, MaxReadahead, Flags uint32
}

// OpenIn is struct fuse_open_in (also OPENDIR's).
type OpenIn struct {
	Flags, OpenFlags uint32
}

// ReadIn is struct fuse_read_in; struct fuse_write_in has the same layout
// (its ReadFlags field is write_flags).
type ReadIn struct {
	Fh, Offset      uint64
	Size, ReadFlags uint32
	LockOwner       uint64
	Flags, Padding  uint32
}

// WriteIn is struct fuse_write_in.
type WriteIn = ReadIn

// ReleaseIn is struct fuse_release_in (also RELEASEDIR's).
type ReleaseIn struct {
	Fh                  uint64
	Flags, ReleaseFlags uint32
	LockOwner           uint64
}

// FlushIn is struct fuse_flush_in.
type FlushIn struct {
	Fh        uint64
	Unused    uint32
	Padding   uint32
	LockOwner uint64
}

// InterruptIn is struct fuse_interrupt_in.
type InterruptIn struct {
	Unique uint64
}

// IoctlIn is struct fuse_ioctl_in.
type IoctlIn struct {
	Fh              uint64
	Flags, Cmd      uint32
	Arg             uint64
	InSize, OutSize uint32
}

// PollIn is struct fuse_poll_in; since 7.21 it carries the requested events.
type PollIn struct {
	Fh     uint64
	Kh     uint64
	Flags  uint32
	Events uint32
}

// Request is one decoded request from the kernel. Exactly one of the
// opcode-specific fields is meaningful, selected by Header.Opcode.
type Request struct {
	Header    InHeader
	CuseInit  CuseInitIn
	Init      InitIn
	Open      OpenIn // OPEN and OPENDIR
	Read      ReadIn // READ and READDIR
	Write     WriteIn
	Release   ReleaseIn // RELEASE and RELEASEDIR
	Flush     FlushIn
	Forget    uint64 // FORGET's nlookup
	Interrupt InterruptIn
	Ioctl     IoctlIn
	Poll      PollIn
	// PayloadLen is the number of bytes after the fixed part (the WRITE
	// payload, IOCTL input data, LOOKUP's name, BATCH_FORGET's entries).
	PayloadLen int
}

// bodySize is the fixed size after the in-header for each opcode we decode.
var bodySize = map[uint32]int{
	OpCuseInit:    CuseInitInSize,
	OpInit:        InitInSize,
	OpOpen:        OpenInSize,
	OpOpendir:     OpenInSize,
	OpRead:        ReadInSize,
	OpReaddir:     ReadInSize,
	OpWrite:       WriteInSize,
	OpRelease:     ReleaseInSize,
	OpReleasedir:  ReleaseInSize,
	OpFlush:       FlushInSize,
	OpForget:      ForgetInSize,
	OpBatchForget: BatchForgetSize,
	OpGetattr:     GetattrInSize,
	OpInterrupt:   InterruptInSize,
	OpIoctl:       IoctlInSize,
	OpPoll:        PollInSize,
	OpLookup:      0,
	OpSetattr:     0,
	OpStatfs:      0,
	OpDestroy:     0,
}

// opName is for log lines and the debug printer.
var opName = map[uint32]string{
	OpLookup: "LOOKUP", OpForget: "FORGET", OpGetattr: "GETATTR", OpSetattr: "SETATTR",
	OpOpen: "OPEN", OpRead: "READ", OpWrite: "WRITE", OpStatfs: "STATFS", OpRelease: "RELEASE",
	OpFlush: "FLUSH", OpInit: "INIT", OpOpendir: "OPENDIR", OpReaddir: "READDIR",
	OpReleasedir: "RELEASEDIR", OpInterrupt: "INTERRUPT", OpDestroy: "DESTROY", OpIoctl: "IOCTL",
	OpPoll: "POLL", OpBatchForget: "BATCH_FORGET", OpCuseInit: "CUSE_INIT",
}

// OpName names an opcode ("READ", or "op(22)" for one we do not serve).
func OpName(op uint32) string {
	if s, ok := opName[op]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", op)
}

// ParseRequest decodes the fixed part of a request. head holds the first
// bytes read (at least the header and the opcode's fixed part when the
// message is that long); total is the number of bytes the read returned.
// It checks lengths before reading any field and never panics.
func ParseRequest(head []byte, total int) (Request, error) {
	var r Request
	if total < InHeaderSize || len(head) < InHeaderSize {
		return r, fmt.Errorf("header: %w (%d bytes)", ErrShort, total)
	}
	le := binary.LittleEndian
	h := &r.Header
	h.Length = le.Uint32(head[0:])
	h.Opcode = le.Uint32(head[4:])
	h.Unique = le.Uint64(head[8:])
	h.NodeId = le.Uint64(head[16:])
	h.Uid = le.Uint32(head[24:])
	h.Gid = le.Uint32(head[28:])
	h.Pid = le.Uint32(head[32:])
	h.TotalExtlen = le.Uint16(head[36:])
	h.Padding = le.Uint16(head[38:])
	if int(h.Length) != total {
		return r, fmt.Errorf("%s: length field %d, read %d: %w", OpName(h.Opcode), h.Length, total, ErrShort)
	}
	need, known := bodySize[h.Opcode]
	if !known {
		return r, nil // dispatch answers ENOSYS
	}
	if total < InHeaderSize+need || len(head) < InHeaderSize+need {
		return r, fmt.Errorf("%s: %w (%d bytes, need %d)", OpName(h.Opcode), ErrShort, total, InHeaderSize+need)
	}
	b := head[InHeaderSize:]
	r.PayloadLen = total - InHeaderSize - need
	switch h.Opcode {
	case OpCuseInit:
		r.CuseInit = CuseInitIn{le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])}
	case OpInit:
		r.Init = InitIn{le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])}
	case OpOpen, OpOpendir:
		r.Open = OpenIn{le.Uint32(b[0:]), le.Uint32(b[4:])}
	case OpRead, OpReaddir, OpWrite:
		// fuse_read_in and fuse_write_in share one layout.
		in := ReadIn{Fh: le.Uint64(b[0:]), Offset: le.Uint64(b[8:]), Size: le.Uint32(b[16:]),
			ReadFlags: le.Uint32(b[20:]), LockOwner: le.Uint64(b[24:]), Flags: le.Uint32(b[32:])}
		if h.Opcode != OpWrite {
			r.Read = in
			break
		}
		r.Write = in
		if int(in.Size) != r.PayloadLen {
			return r, fmt.Errorf("WRITE: size %d, payload %d: %w", in.Size, r.PayloadLen, ErrShort)
		}
	case OpRelease, OpReleasedir:
		r.Release = ReleaseIn{Fh: le.Uint64(b[0:]), Flags: le.Uint32(b[8:]), ReleaseFlags: le.Uint32(b[12:]), LockOwner: le.Uint64(b[16:])}
	case OpFlush:
		r.Flush = FlushIn{Fh: le.Uint64(b[0:]), LockOwner: le.Uint64(b[16:])}
	case OpForget:
		r.Forget = le.Uint64(b[0:])
	case OpGetattr:
		// getattr_flags and fh: attributes do not depend on the handle here.
	case OpInterrupt:
		r.Interrupt.Unique = le.Uint64(b[0:])
	case OpIoctl:
		r.Ioctl = IoctlIn{Fh: le.Uint64(b[0:]), Flags: le.Uint32(b[8:]), Cmd: le.Uint32(b[12:]), Arg: le.Uint64(b[16:]), InSize: le.Uint32(b[24:]), OutSize: le.Uint32(b[28:])}
	case OpPoll:
		r.Poll = PollIn{Fh: le.Uint64(b[0:]), Kh: le.Uint64(b[8:]), Flags: le.Uint32(b[16:]), Events: le.Uint32(b[20:])}
	}
	return r, nil
}

// putOutHeader encodes struct fuse_out_header. errno is positive (or 0); the
// wire carries its negation. For a notification pass code and unique 0.
func putOutHeader(b []byte, length int, status int32, unique uint64) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(length))
	le.PutUint32(b[4:], uint32(status))
	le.PutUint64(b[8:], unique)
}

// encodeCuseInitOut encodes the CUSE_INIT reply body.
func encodeCuseInitOut(b []byte, o CuseInitOut) {
	le := binary.LittleEndian
	for i, v := range []uint32{o.Major, o.Minor, o.Unused, o.Flags, o.MaxRead, o.MaxWrite, o.DevMajor, o.DevMinor} {
		le.PutUint32(b[4*i:], v)
	}
	for i, v := range o.Spare {
		le.PutUint32(b[32+4*i:], v)
	}
}

// DecodeCuseInitOut decodes a CUSE_INIT reply body (used by the fake kernel).
func DecodeCuseInitOut(b []byte) (CuseInitOut, error) {
	var o CuseInitOut
	if len(b) < CuseInitOutSize {
		return o, fmt.Errorf("cuse_init_out: %w (%d bytes)", ErrShort, len(b))
	}
	le := binary.LittleEndian
	f := []*uint32{&o.Major, &o.Minor, &o.Unused, &o.Flags, &o.MaxRead, &o.MaxWrite, &o.DevMajor, &o.DevMinor}
	for i, p := range f {
		*p = le.Uint32(b[4*i:])
	}
	for i := range o.Spare {
		o.Spare[i] = le.Uint32(b[32+4*i:])
	}
	return o, nil
}

// DevInfo packs the devinfo block of the CUSE_INIT reply: "KEY=VALUE\0"
// strings with the NUL after the last one that cuse_parse_devinfo requires.
func DevInfo(name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("cuse: empty device name")
	}
	for _, c := range []byte(name) {
		if c == 0 || c == '=' {
			return nil, fmt.Errorf("cuse: device name %q: contains NUL or '='", name)
		}
	}
	info := append([]byte("DEVNAME="+name), 0)
	if len(info) > MaxInfoSize {
		return nil, fmt.Errorf("cuse: device name %q: devinfo longer than %d bytes", name, MaxInfoSize)
	}
	return info, nil
}

// ParseDevInfo splits a devinfo block as cuse_parse_devinfo does and returns
// the keys; it fails when the block is not NUL-terminated.
func ParseDevInfo(b []byte) (map[string]string, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return nil, errors.New("info not properly terminated")
	}
	kv := map[string]string{}
	start := 0
	for i, c := range b {
		if c != 0 {
			continue
		}
		entry := string(b[start:i])
		start = i + 1
		if entry == "" {
			continue
		}
		k, v, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("devinfo entry %q has no '='", entry)
		}
		kv[k] = v
	}
	return kv, nil
}
