package cuse

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestWireSizes pins each wire struct to its size in fuse_kernel.h: the
// Go struct (its in-memory size and its encoded size, which agree only
// without hidden padding) against the *Size constant the codec uses.
func TestWireSizes(t *testing.T) {
	tests := []struct {
		cStruct string
		v       any
		mem     uintptr
		want    int
	}{
		{"struct fuse_in_header", InHeader{}, unsafe.Sizeof(InHeader{}), InHeaderSize},
		{"struct fuse_out_header", OutHeader{}, unsafe.Sizeof(OutHeader{}), OutHeaderSize},
		{"struct cuse_init_in", CuseInitIn{}, unsafe.Sizeof(CuseInitIn{}), CuseInitInSize},
		{"struct cuse_init_out", CuseInitOut{}, unsafe.Sizeof(CuseInitOut{}), CuseInitOutSize},
		{"struct fuse_init_in (to flags)", InitIn{}, unsafe.Sizeof(InitIn{}), InitInSize},
		{"struct fuse_open_in", OpenIn{}, unsafe.Sizeof(OpenIn{}), OpenInSize},
		{"struct fuse_read_in", ReadIn{}, unsafe.Sizeof(ReadIn{}), ReadInSize},
		{"struct fuse_write_in", WriteIn{}, unsafe.Sizeof(WriteIn{}), WriteInSize},
		{"struct fuse_release_in", ReleaseIn{}, unsafe.Sizeof(ReleaseIn{}), ReleaseInSize},
		{"struct fuse_flush_in", FlushIn{}, unsafe.Sizeof(FlushIn{}), FlushInSize},
		{"struct fuse_interrupt_in", InterruptIn{}, unsafe.Sizeof(InterruptIn{}), InterruptInSize},
		{"struct fuse_ioctl_in", IoctlIn{}, unsafe.Sizeof(IoctlIn{}), IoctlInSize},
		{"struct fuse_poll_in", PollIn{}, unsafe.Sizeof(PollIn{}), PollInSize},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, int(tt.mem), "%s: in-memory size", tt.cStruct)
		require.Equal(t, tt.want, binary.Size(tt.v), "%s: encoded size", tt.cStruct)
	}
	// The structs the codec writes by hand, field by field, as C lays them
	// out (fuse_kernel.h).
	for _, tt := range []struct {
		cStruct string
		fields  []int // field sizes, in order
		want    int
	}{
		{"struct fuse_open_out {fh, open_flags, backing_id}", []int{8, 4, 4}, OpenOutSize},
		{"struct fuse_write_out {size, padding}", []int{4, 4}, WriteOutSize},
		{"struct fuse_forget_in {nlookup}", []int{8}, ForgetInSize},
		{"struct fuse_batch_forget_in {count, dummy}", []int{4, 4}, BatchForgetSize},
		{"struct fuse_getattr_in {getattr_flags, dummy, fh}", []int{4, 4, 8}, GetattrInSize},
		{"struct fuse_ioctl_out {result, flags, in_iovs, out_iovs}", []int{4, 4, 4, 4}, IoctlOutSize},
		{"struct fuse_poll_out {revents, padding}", []int{4, 4}, PollOutSize},
		{"struct fuse_notify_poll_wakeup_out {kh}", []int{8}, NotifyPollOutLen},
		{"struct fuse_init_out (7.28+: 16 bytes of ints, 2 u16, 2 u32, 2 u16, flags2, 7 u32 unused)", []int{4, 4, 4, 4, 2, 2, 4, 4, 2, 2, 4, 7 * 4}, InitOutSize},
		{"struct fuse_attr {ino, size, blocks, atime, mtime, ctime, 3 nsec, mode, nlink, uid, gid, rdev, blksize, flags}", []int{8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}, AttrSize},
		{"struct fuse_attr_out {attr_valid, attr_valid_nsec, dummy, attr}", []int{8, 4, 4, AttrSize}, AttrOutSize},
		{"struct fuse_entry_out {nodeid, generation, entry_valid, attr_valid, 2 nsec, attr}", []int{8, 8, 8, 8, 4, 4, AttrSize}, EntryOutSize},
		{"struct fuse_kstatfs {blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]}", []int{8, 8, 8, 8, 8, 4, 4, 4, 4, 6 * 4}, StatfsOutSize},
		{"struct fuse_dirent {ino, off, namelen, type}", []int{8, 8, 4, 4}, DirentSize},
	} {
		sum := 0
		for _, f := range tt.fields {
			sum += f
		}
		require.Equal(t, tt.want, sum, tt.cStruct)
	}
	require.Equal(t, InHeaderSize+WriteInSize, RequestHeadSize)
}

func TestCuseInitOutRoundTrip(t *testing.T) {
	in := CuseInitOut{Major: 7, Minor: 28, Flags: 1, MaxRead: 1 << 17, MaxWrite: 1 << 16, DevMajor: 240, DevMinor: 3}
	in.Spare[9] = 42
	b := make([]byte, CuseInitOutSize)
	encodeCuseInitOut(b, in)
	out, err := DecodeCuseInitOut(b)
	require.NoError(t, err)
	require.Equal(t, in, out)
	_, err = DecodeCuseInitOut(b[:71])
	require.ErrorIs(t, err, ErrShort)
}

func TestDevInfo(t *testing.T) {
	b, err := DevInfo("tbstream0")
	require.NoError(t, err)
	require.Equal(t, []byte("DEVNAME=tbstream0\x00"), b)
	kv, err := ParseDevInfo(b)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"DEVNAME": "tbstream0"}, kv)

	for _, bad := range []string{"", "a\x00b", "x=y", string(make([]byte, MaxInfoSize))} {
		_, err := DevInfo(bad)
		require.Error(t, err, "%q", bad)
	}
	_, err = ParseDevInfo([]byte("DEVNAME=x"))
	require.ErrorContains(t, err, "not properly terminated")
	_, err = ParseDevInfo([]byte("DEVNAME\x00"))
	require.Error(t, err)
}

// request builds a message: header for op with unique 2, then body.
func request(op uint32, body []byte, lengthDelta int) []byte {
	b := make([]byte, InHeaderSize+len(body))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)+lengthDelta))
	binary.LittleEndian.PutUint32(b[4:], op)
	binary.LittleEndian.PutUint64(b[8:], 2)
	copy(b[InHeaderSize:], body)
	return b
}

func TestParseRequest(t *testing.T) {
	readIn := make([]byte, ReadInSize)
	binary.LittleEndian.PutUint64(readIn[0:], 9)     // fh
	binary.LittleEndian.PutUint32(readIn[16:], 4096) // size
	binary.LittleEndian.PutUint32(readIn[32:], 04000)
	writeIn := append([]byte(nil), readIn...)
	binary.LittleEndian.PutUint32(writeIn[16:], 3)
	tests := []struct {
		name    string
		msg     []byte
		wantErr bool
		check   func(t *testing.T, r Request)
	}{
		{name: "too short for a header", msg: make([]byte, 39), wantErr: true},
		{name: "length field disagrees", msg: request(OpOpen, make([]byte, OpenInSize), 4), wantErr: true},
		{name: "read without body", msg: request(OpRead, make([]byte, 8), 0), wantErr: true},
		{name: "poll body short", msg: request(OpPoll, make([]byte, PollInSize-1), 0), wantErr: true},
		{name: "write size disagrees with payload", msg: request(OpWrite, append(append([]byte(nil), writeIn...), 1, 2), 0), wantErr: true},
		{name: "unknown opcode parses, dispatch answers ENOSYS", msg: request(20, nil, 0), check: func(t *testing.T, r Request) {
			require.Equal(t, uint32(20), r.Header.Opcode)
		}},
		{name: "read", msg: request(OpRead, readIn, 0), check: func(t *testing.T, r Request) {
			require.Equal(t, uint64(9), r.Read.Fh)
			require.Equal(t, uint32(4096), r.Read.Size)
			require.Equal(t, uint32(04000), r.Read.Flags)
			require.Equal(t, uint64(2), r.Header.Unique)
		}},
		{name: "write with payload", msg: request(OpWrite, append(append([]byte(nil), writeIn...), 'a', 'b', 'c'), 0), check: func(t *testing.T, r Request) {
			require.Equal(t, 3, r.PayloadLen)
			require.Equal(t, uint32(3), r.Write.Size)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := tt.msg[:min(len(tt.msg), RequestHeadSize)]
			r, err := ParseRequest(head, len(tt.msg))
			if tt.wantErr {
				require.ErrorIs(t, err, ErrShort)
				return
			}
			require.NoError(t, err)
			tt.check(t, r)
		})
	}
}

// FuzzParseRequest feeds arbitrary bytes, as a broken kernel or a fake
// could send them, through the request parser.
func FuzzParseRequest(f *testing.F) {
	readIn := make([]byte, ReadInSize)
	f.Add(request(OpRead, readIn, 0))
	f.Add(request(OpWrite, append(readIn, 'x'), 0))
	f.Add(request(OpPoll, make([]byte, PollInSize), 0))
	f.Add(request(OpCuseInit, make([]byte, CuseInitInSize), 0))
	f.Add(request(OpInterrupt, make([]byte, 8), 0))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, msg []byte) {
		head := msg[:min(len(msg), RequestHeadSize)]
		r, err := ParseRequest(head, len(msg))
		if err != nil {
			return
		}
		if int(r.Header.Length) != len(msg) {
			t.Fatalf("accepted length %d for %d bytes", r.Header.Length, len(msg))
		}
		if size, ok := bodySize[r.Header.Opcode]; ok && r.PayloadLen != len(msg)-InHeaderSize-size {
			t.Fatalf("payload %d for %d bytes of %s", r.PayloadLen, len(msg), OpName(r.Header.Opcode))
		}
		if r.Header.Opcode == OpWrite && int(r.Write.Size) != r.PayloadLen {
			t.Fatalf("write size %d, payload %d", r.Write.Size, r.PayloadLen)
		}
	})
}
