package emu

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func validFrames() []cableFrame {
	return []cableFrame{
		{Kind: CableHello, Payload: cableHello{UID: 0x1122334455667788}.payload()},
		{Kind: CableHello, Payload: cableHello{Flags: helloFlagKey, UID: 1, Nonce: [32]byte{31: 7}, Tag: [32]byte{0: 1}}.payload()},
		{Kind: CableAuth, Payload: make([]byte, 32)},
		{Kind: CableData, SOF: 1, EOF: 2, HopID: 8, Payload: []byte{0xaa}},
		{Kind: CableData, SOF: 1, EOF: 3, HopID: CableMaxHopID, Payload: make([]byte, 4096)},
		{Kind: CableControl, SOF: 6, EOF: 6, Payload: make([]byte, 256)},
		{Kind: CableCredit, HopID: 8, Payload: []byte{0, 0, 0, 31}},
		{Kind: CableCreditReset, HopID: 19},
		{Kind: CableUnplug},
	}
}

func TestCableFrameRoundTrip(t *testing.T) {
	var wire []byte
	for _, f := range validFrames() {
		wire = appendCableFrame(wire, f)
	}
	r := bufio.NewReaderSize(bytes.NewReader(wire), minReaderSize)
	for _, want := range validFrames() {
		got, err := readCableFrame(r)
		require.NoError(t, err)
		require.Equal(t, want.Kind, got.Kind)
		require.Equal(t, want.HopID, got.HopID)
		require.Equal(t, want.SOF, got.SOF)
		require.Equal(t, want.EOF, got.EOF)
		require.Equal(t, len(want.Payload), len(got.Payload))
		require.True(t, bytes.Equal(want.Payload, got.Payload))
	}
	_, err := readCableFrame(r)
	require.ErrorIs(t, err, io.EOF)
}

func TestCableFrameMalformed(t *testing.T) {
	hdr := func(kind, pdf byte, hop, n, res uint16) []byte {
		return []byte{kind, pdf, byte(hop >> 8), byte(hop), byte(n >> 8), byte(n), byte(res >> 8), byte(res)}
	}
	for _, tc := range []struct {
		name string
		wire []byte
		want error
	}{
		{"unknown kind", hdr(9, 0, 0, 0, 0), ErrMalformed},
		{"kind zero", hdr(0, 0, 0, 0, 0), ErrMalformed},
		{"empty data", hdr(2, 0x12, 8, 0, 0), ErrMalformed},
		{"data too long", hdr(2, 0x12, 8, 4097, 0), ErrMalformed},
		{"control unaligned", append(hdr(3, 0x66, 0, 6, 0), make([]byte, 6)...), ErrMalformed},
		{"control too long", hdr(3, 0x66, 0, 260, 0), ErrMalformed},
		{"control PDFs differ", hdr(3, 0x67, 0, 8, 0), ErrMalformed},
		{"control with HopID", hdr(3, 0x66, 8, 8, 0), ErrMalformed},
		{"credit size", hdr(4, 0, 8, 8, 0), ErrMalformed},
		{"credit with PDFs", hdr(4, 0x12, 8, 4, 0), ErrMalformed},
		{"reserved set", hdr(6, 0, 0, 0, 1), ErrMalformed},
		{"HopID too large", hdr(5, 0, 0x800, 0, 0), ErrMalformed},
		{"hello bad magic", append(hdr(1, 0, 0, 80, 0), make([]byte, 80)...), ErrMalformed},
		{"hello version 1", append(hdr(1, 0, 0, 16, 0), 'T', 'B', 'S', 'C', 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), ErrMalformed},
		{"hello too short", append(hdr(1, 0, 0, 7, 0), 'T', 'B', 'S', 'C', 0, 2, 0), ErrMalformed},
		{"hello v2 truncated", append(hdr(1, 0, 0, 16, 0), 'T', 'B', 'S', 'C', 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), ErrMalformed},
		{"hello of version 2, 48 bytes", append(hdr(1, 0, 0, 48, 0), append([]byte{'T', 'B', 'S', 'C', 0, 2, 0, 0}, make([]byte, 40)...)...), ErrMalformed},
		{"hello unknown flag", append(hdr(1, 0, 0, 80, 0), append([]byte{'T', 'B', 'S', 'C', 0, 2, 0, 4}, make([]byte, 72)...)...), ErrMalformed},
		{"shm size", append(hdr(8, 0, 0, 8, 0), make([]byte, 8)...), ErrMalformed},
		{"shm with HopID", append(hdr(8, 0, 3, 4, 0), make([]byte, 4)...), ErrMalformed},
		{"shm with PDFs", append(hdr(8, 0x11, 0, 4, 0), make([]byte, 4)...), ErrMalformed},
		{"auth size", append(hdr(7, 0, 0, 31, 0), make([]byte, 31)...), ErrMalformed},
		{"auth with HopID", append(hdr(7, 0, 8, 32, 0), make([]byte, 32)...), ErrMalformed},
		{"truncated header", []byte{2, 0x12, 0}, io.ErrUnexpectedEOF},
		{"truncated payload", append(hdr(2, 0x12, 8, 100, 0), 1, 2, 3), io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readCableFrame(bufio.NewReaderSize(bytes.NewReader(tc.wire), minReaderSize))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// FuzzCableFrame feeds arbitrary bytes to the cable frame reader: it must
// never panic, and every frame it accepts must encode back to the bytes
// it consumed.
func FuzzCableFrame(f *testing.F) {
	for _, fr := range validFrames() {
		f.Add(appendCableFrame(nil, fr))
	}
	f.Add([]byte{2, 0x12, 0, 8, 0xff, 0xff, 0, 0})
	f.Add([]byte{3, 0x66, 0, 0, 0, 4, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), minReaderSize)
		consumed := 0
		for {
			fr, err := readCableFrame(br)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			enc := appendCableFrame(nil, fr)
			if !bytes.Equal(enc, data[consumed:consumed+len(enc)]) {
				t.Fatalf("frame %+v re-encodes differently", fr)
			}
			consumed += len(enc)
		}
	})
}
