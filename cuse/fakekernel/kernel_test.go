package fakekernel

import (
	"context"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
)

// initReply builds a CUSE_INIT reply by hand, the way a broken server might.
func initReply(unique uint64, major, minor uint32, info string, lengthDelta int) [][]byte {
	body := make([]byte, cuse.CuseInitOutSize)
	binary.LittleEndian.PutUint32(body[0:], major)
	binary.LittleEndian.PutUint32(body[4:], minor)
	binary.LittleEndian.PutUint32(body[16:], cuse.DefaultMaxIO)
	binary.LittleEndian.PutUint32(body[20:], cuse.DefaultMaxIO)
	hdr := make([]byte, cuse.OutHeaderSize)
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(hdr)+len(body)+len(info)+lengthDelta))
	binary.LittleEndian.PutUint64(hdr[8:], unique)
	return [][]byte{hdr, body, []byte(info)}
}

// TestKernelChecksInitReply drives the fake with hand-made replies: it
// must refuse what cuse_process_init_reply refuses.
func TestKernelChecksInitReply(t *testing.T) {
	tests := []struct {
		name         string
		major, minor uint32
		info         string
		lengthDelta  int
		wantErrno    syscall.Errno // from the write
		wantOK       bool
	}{
		{name: "good", major: 7, minor: 28, info: "DEVNAME=tbstream0\x00", wantOK: true},
		{name: "info not terminated", major: 7, minor: 28, info: "DEVNAME=tbstream0"},
		{name: "no DEVNAME", major: 7, minor: 28, info: "FOO=bar\x00"},
		{name: "empty DEVNAME", major: 7, minor: 28, info: "DEVNAME=\x00"},
		{name: "major 8", major: 8, minor: 0, info: "DEVNAME=x\x00"},
		{name: "minor 10", major: 7, minor: 10, info: "DEVNAME=x\x00"},
		{name: "length field wrong", major: 7, minor: 28, info: "DEVNAME=x\x00", lengthDelta: 1, wantErrno: syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := New(Config{DevDir: t.TempDir()})
			require.NoError(t, err)
			defer k.Close()
			ch := k.Channel()
			defer ch.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res := make(chan error, 1)
			go func() { _, err := k.Init(ctx); res <- err }()
			buf := make([]byte, cuse.MinReadBuffer)
			n, err := ch.ReadRequest([][]byte{buf})
			require.NoError(t, err)
			req, err := cuse.ParseRequest(buf[:n], n)
			require.NoError(t, err)
			require.Equal(t, cuse.OpCuseInit, req.Header.Opcode)
			require.Equal(t, uint32(7), req.CuseInit.Major)

			werr := ch.WriteReply(initReply(req.Header.Unique, tt.major, tt.minor, tt.info, tt.lengthDelta))
			if tt.wantErrno != 0 {
				require.ErrorIs(t, werr, tt.wantErrno)
				require.NotEmpty(t, k.Violations())
				return
			}
			err = <-res
			if tt.wantOK {
				require.NoError(t, err)
				require.Empty(t, k.Violations())
				require.FileExists(t, k.Node())
				// After init the read buffer must hold 80 + max_write.
				_, err = ch.ReadRequest([][]byte{make([]byte, cuse.DefaultMaxIO)})
				require.ErrorIs(t, err, syscall.EINVAL)
				return
			}
			require.Error(t, err)
			require.NotEmpty(t, k.Violations())
			require.Empty(t, k.Node(), "no node for a refused device")
		})
	}
}

func TestKernelReplyRules(t *testing.T) {
	k, err := New(Config{})
	require.NoError(t, err)
	defer k.Close()
	ch := k.Channel()
	defer ch.Close()

	_, err = ch.ReadRequest([][]byte{make([]byte, cuse.MinReadBuffer-1)})
	require.ErrorIs(t, err, syscall.EINVAL, "read buffer below FUSE_MIN_READ_BUFFER")

	hdr := make([]byte, cuse.OutHeaderSize)
	binary.LittleEndian.PutUint32(hdr[0:], cuse.OutHeaderSize)
	binary.LittleEndian.PutUint64(hdr[8:], 1234)
	require.ErrorIs(t, ch.WriteReply([][]byte{hdr}), syscall.ENOENT, "reply to an unknown unique")

	c := k.Reserve(cuse.OpOpen)
	binary.LittleEndian.PutUint64(hdr[8:], c.Unique)
	binary.LittleEndian.PutUint32(hdr[4:], 5) // positive error
	require.ErrorIs(t, ch.WriteReply([][]byte{hdr}), syscall.EINVAL, "error must be 0 or -errno")
	require.Len(t, k.Violations(), 2)
}

// TestKernelNotifications: NOTIFY_POLL and FUSE_NOTIFY_INVAL_ENTRY are
// accepted when well formed and recorded; anything else with unique 0 is
// a violation.
func TestKernelNotifications(t *testing.T) {
	k, err := New(Config{})
	require.NoError(t, err)
	defer k.Close()
	ch := k.Channel()
	defer ch.Close()
	le := binary.LittleEndian
	notify := func(code int32, body []byte) error {
		hdr := make([]byte, cuse.OutHeaderSize)
		le.PutUint32(hdr[0:], uint32(len(hdr)+len(body)))
		le.PutUint32(hdr[4:], uint32(code))
		return ch.WriteReply([][]byte{hdr, body})
	}
	inval := func(parent uint64, namelen uint32, name string) []byte {
		b := le.AppendUint64(nil, parent)
		b = le.AppendUint32(b, namelen)
		b = le.AppendUint32(b, 0)
		return append(b, name...)
	}

	require.NoError(t, notify(cuse.NotifyPoll, le.AppendUint64(nil, 77)))
	kh, _ := k.Notifications()
	require.Equal(t, []uint64{77}, kh)
	require.NoError(t, notify(notifyInvalEntry, inval(1, 3, "abc\x00")))
	require.Equal(t, []string{"abc"}, k.Invalidated())
	require.Empty(t, k.Violations())

	for _, bad := range []struct {
		name string
		code int32
		body []byte
	}{
		{"NOTIFY_POLL too short", cuse.NotifyPoll, make([]byte, 4)},
		{"INVAL_ENTRY without its NUL", notifyInvalEntry, inval(1, 3, "abc")},
		{"INVAL_ENTRY namelen disagrees", notifyInvalEntry, inval(1, 2, "abc\x00")},
		{"INVAL_ENTRY too short", notifyInvalEntry, make([]byte, 8)},
		{"unknown code", 9, nil},
	} {
		require.ErrorIs(t, notify(bad.code, bad.body), syscall.EINVAL, bad.name)
	}
	require.Len(t, k.Violations(), 5)
	require.Equal(t, []string{"abc"}, k.Invalidated())
}
