package ctl

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCRCIsCastagnoli(t *testing.T) {
	// The check value of CRC-32C.
	require.Equal(t, uint32(0xe3069283), CRC([]byte("123456789")))
}

func TestAppendFrameBigEndianWithCRC(t *testing.T) {
	frame, err := AppendFrame(nil, []uint32{0x01020304, 0xa0b0c0d0})
	require.NoError(t, err)
	require.Equal(t, []byte{1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0}, frame[:8])
	require.Equal(t, CRC(frame[:8]), binary.BigEndian.Uint32(frame[8:]))

	body, err := ParseFrame(frame)
	require.NoError(t, err)
	require.Equal(t, []uint32{0x01020304, 0xa0b0c0d0}, body)
}

func TestParseFrameErrors(t *testing.T) {
	good, err := AppendFrame(nil, []uint32{0, 0x503, 0x12345678})
	require.NoError(t, err)

	badCRC := append([]byte(nil), good...)
	badCRC[5] ^= 0x40
	long, err := AppendFrame(nil, make([]uint32, MaxBodyWords))
	require.NoError(t, err)
	long = append(long, 0, 0, 0, 0)

	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrShort},
		{"three bytes", good[:3], ErrShort},
		{"misaligned", good[:len(good)-1], ErrAlign},
		{"truncated", good[:len(good)-4], ErrCRC},
		{"flipped bit", badCRC, ErrCRC},
		{"260 bytes", long, ErrTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFrame(tc.frame)
			require.ErrorIs(t, err, tc.want)
		})
	}
	_, err = AppendFrame(nil, make([]uint32, MaxBodyWords+1))
	require.ErrorIs(t, err, ErrTooLong)
}

func TestHeaderLayout(t *testing.T) {
	body, err := AppendBody(nil, &Reset{Header: Header{Route: 0x0000_0102_0304_0506, Reply: true}})
	require.NoError(t, err)
	require.Equal(t, []uint32{0x8000_0102, 0x0304_0506}, body)

	r, err := RouteOf([]uint32{0xffc0_0001, 0x0000_0503})
	require.NoError(t, err)
	require.Equal(t, Route(0x1_0000_0503), r, "the ten unknown bits are not part of the route")
}

func TestAddressLayout(t *testing.T) {
	// offset:13, length:6, port:6, space:2, seq:2 — LSB first.
	a := Address{Offset: 0x10, Length: 2, Adapter: 3, Space: SpaceAdapter, Seq: 1}
	w, err := a.word()
	require.NoError(t, err)
	require.Equal(t, uint32(0x0a18_4010), w)
	back, err := parseAddress(w)
	require.NoError(t, err)
	require.Equal(t, a, back)

	for _, bad := range []Address{{Offset: 1 << 13}, {Length: 61}, {Adapter: 64}, {Space: 4}, {Seq: 4}} {
		_, err := bad.word()
		require.ErrorIs(t, err, ErrLength, "%+v", bad)
	}
	_, err = parseAddress(1 << 29)
	require.ErrorIs(t, err, ErrLength)
}

func TestReadRequestWireBytes(t *testing.T) {
	// READ of ADP_CS_4..5 (offset 4, 2 dwords) of adapter 3 on the router
	// at route 0x503, retry 2.
	frame, err := Encode(&ConfigRead{
		Header: Header{Route: 0x503},
		Addr:   Address{Offset: 4, Length: 2, Adapter: 3, Space: SpaceAdapter, Seq: 2},
	})
	require.NoError(t, err)
	want := []byte{
		0, 0, 0, 0, // route_hi
		0, 0, 0x05, 0x03, // route_lo
		0x12, 0x18, 0x40, 0x04, // address: 4 | 2<<13 | 3<<19 | 1<<25 | 2<<27
	}
	require.Equal(t, want, frame[:12])
	require.Equal(t, CRC(want), binary.BigEndian.Uint32(frame[12:]))
}

func TestPacketsRoundTrip(t *testing.T) {
	h := Header{Route: 0x503}
	reply := Header{Route: 0x1, Reply: true}
	data := []uint32{0xdeadbeef, 0x8, 0x13}
	for _, p := range []Packet{
		&ConfigRead{Header: h, Addr: Address{Offset: 0, Length: 3, Space: SpaceRouter}},
		&ConfigRead{Header: reply, Addr: Address{Offset: 0, Length: 3, Adapter: 1, Space: SpaceRouter, Seq: 3}, Data: data},
		&ConfigRead{Header: reply, Addr: Address{Length: MaxConfigWords, Space: SpacePath}, Data: make([]uint32, MaxConfigWords)},
		&ConfigWrite{Header: h, Addr: Address{Offset: 16, Length: 3, Adapter: 5, Space: SpacePath, Seq: 1}, Data: data},
		&ConfigWrite{Header: reply, Addr: Address{Offset: 16, Length: 3, Adapter: 5, Space: SpacePath, Seq: 1}},
		&ConfigError{Header: reply, Code: ErrorAckPlugEvent, Adapter: 3, PG: PGHotUnplug},
		&ConfigError{Header: reply, Code: ErrorInvalidConfigSpace, Adapter: 63},
		&Event{Header: reply, Adapter: 3, Unplug: true},
		&Event{Header: reply, Adapter: 5},
		&Reset{Header: h},
		&Raw{Header: h, Kind: TypeXDomainRequest, Body: []uint32{5, 1, 2, 3, 4, 12}},
		&Raw{Header: reply, Kind: TypeICMEvent},
	} {
		t.Run(p.Type().String(), func(t *testing.T) {
			frame, err := Encode(p)
			require.NoError(t, err)
			require.LessOrEqual(t, len(frame), MaxFrameSize)
			back, err := Decode(p.Type(), frame)
			require.NoError(t, err)
			if r, ok := p.(*Raw); ok && r.Body == nil {
				r.Body = []uint32{}
			}
			require.Equal(t, p, back)
		})
	}
}

func TestDecodeLengthErrors(t *testing.T) {
	frame := func(words ...uint32) []byte {
		f, err := AppendFrame(nil, words)
		require.NoError(t, err)
		return f
	}
	addr3 := uint32(3 << 13) // length 3
	for _, tc := range []struct {
		name string
		t    Type
		f    []byte
		want error
	}{
		{"header only read", TypeRead, frame(0, 1), ErrLength},
		{"read with short data", TypeRead, frame(0, 1, addr3, 1, 2), ErrLength},
		{"write with long data", TypeWrite, frame(0, 1, addr3, 1, 2, 3, 4), ErrLength},
		{"error without body", TypeError, frame(0, 1), ErrLength},
		{"event too long", TypeEvent, frame(0, 1, 3, 0), ErrLength},
		{"reset with body", TypeReset, frame(0, 1, 0), ErrLength},
		{"one dword", TypeXDomainRequest, frame(0), ErrShort},
		{"route too deep", TypeReset, frame(0x0001_0000, 0), ErrRoute},
		{"read length 61", TypeRead, frame(0, 1, 61<<13), ErrLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.t, tc.f)
			require.ErrorIs(t, err, tc.want)
		})
	}
	_, err := Encode(&ConfigRead{Header: Header{Route: 1 << 48}})
	require.ErrorIs(t, err, ErrRoute)
	_, err = Encode(&ConfigWrite{Addr: Address{Length: 2}, Data: []uint32{1}})
	require.ErrorIs(t, err, ErrLength)
}

func TestRouteNames(t *testing.T) {
	for _, tc := range []struct {
		r     Route
		s     string
		depth int
	}{{0, "0", 0}, {1, "1", 1}, {0x503, "503", 2}, {0x0605_0403_0201, "60504030201", 6}} {
		require.Equal(t, tc.s, tc.r.String())
		require.Equal(t, tc.depth, tc.r.Depth())
		back, err := ParseRoute(tc.s)
		require.NoError(t, err)
		require.Equal(t, tc.r, back)
	}
	for _, bad := range []string{"", "x", "-1", "1000000000000", "0x1"} {
		_, err := ParseRoute(bad)
		require.Error(t, err, bad)
	}
}

func FuzzControlPacket(f *testing.F) {
	for _, p := range []Packet{
		&ConfigRead{Header: Header{Route: 0x503}, Addr: Address{Offset: 4, Length: 2, Adapter: 3, Space: SpaceAdapter}},
		&ConfigWrite{Header: Header{Route: 1}, Addr: Address{Length: 1}, Data: []uint32{7}},
		&ConfigError{Header: Header{Reply: true}, Code: ErrorAckPlugEvent, PG: PGHotPlug},
		&Event{Header: Header{Reply: true}, Adapter: 3, Unplug: true},
		&Reset{},
		&Raw{Kind: TypeXDomainResponse, Body: []uint32{1, 2, 3}},
	} {
		frame, err := Encode(p)
		require.NoError(f, err)
		f.Add(uint8(p.Type()), frame)
	}
	f.Fuzz(func(t *testing.T, pdf uint8, frame []byte) {
		p, err := Decode(Type(pdf), frame)
		if err != nil {
			return
		}
		again, err := Encode(p)
		require.NoError(t, err, "accepted packet must re-encode")
		back, err := Decode(Type(pdf), again)
		require.NoError(t, err)
		require.Equal(t, p, back)
	})
}
