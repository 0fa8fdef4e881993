package cuse

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
)

// TestWireSizes pins each struct to its size in fuse_kernel.h.
func TestWireSizes(t *testing.T) {
	tests := []struct {
		cStruct string
		got     int
		want    int
	}{
		{"fuse_in_header (fuse.InHeader)", int(unsafe.Sizeof(fuse.InHeader{})), InHeaderSize},
		{"fuse_out_header (fuse.OutHeader)", int(unsafe.Sizeof(fuse.OutHeader{})), OutHeaderSize},
		{"fuse_open_in (fuse.OpenIn)", int(unsafe.Sizeof(fuse.OpenIn{})), InHeaderSize + OpenInSize},
		{"fuse_open_out (fuse.OpenOut)", int(unsafe.Sizeof(fuse.OpenOut{})), OpenOutSize},
		{"fuse_read_in (fuse.ReadIn)", int(unsafe.Sizeof(fuse.ReadIn{})), InHeaderSize + ReadInSize},
		{"fuse_write_in (fuse.WriteIn)", int(unsafe.Sizeof(fuse.WriteIn{})), InHeaderSize + WriteInSize},
		{"fuse_write_out (fuse.WriteOut)", int(unsafe.Sizeof(fuse.WriteOut{})), WriteOutSize},
		{"fuse_release_in (fuse.ReleaseIn)", int(unsafe.Sizeof(fuse.ReleaseIn{})), InHeaderSize + ReleaseInSize},
		{"fuse_interrupt_in (fuse.InterruptIn)", int(unsafe.Sizeof(fuse.InterruptIn{})), InHeaderSize + InterruptInSize},
		{"fuse_ioctl_in (fuse.IoctlIn)", int(unsafe.Sizeof(fuse.IoctlIn{})), InHeaderSize + IoctlInSize},
		{"fuse_ioctl_out (fuse.IoctlOut)", int(unsafe.Sizeof(fuse.IoctlOut{})), IoctlOutSize},
		{"cuse_init_in", binary.Size(CuseInitIn{}), CuseInitInSize},
		{"cuse_init_out", binary.Size(CuseInitOut{}), CuseInitOutSize},
		{"fuse_poll_in", binary.Size(PollIn{}), PollInSize},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.got, tt.cStruct)
	}
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
