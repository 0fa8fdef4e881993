package xdp

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/ctl"
)

func TestXDPUUIDWireBytes(t *testing.T) {
	// §4.1: canonical b638d70e-42ff-40bb-97c2-90e2c0b2ff07 goes on the wire
	// with every 4-byte group reversed.
	require.Equal(t, "b638d70e-42ff-40bb-97c2-90e2c0b2ff07", ProtocolUUID.String())
	raw, err := Encode(&UUIDRequest{Header: Header{Route: 0x1}})
	require.NoError(t, err)
	frame, err := ctl.Encode(raw)
	require.NoError(t, err)
	want := []byte{0x0e, 0xd7, 0x38, 0xb6, 0xbb, 0x40, 0xff, 0x42, 0xe2, 0x90, 0xc2, 0x97, 0x07, 0xff, 0xb2, 0xc0}
	require.Equal(t, want, frame[12:28], "protocol UUID at bytes 12..27")
	require.Equal(t, ctl.TypeXDomainRequest, raw.Kind)
	require.Len(t, frame, 32+ctl.CRCSize, "a UUID request is 32 bytes plus CRC")
	require.Equal(t, []byte{0, 0, 0, 5}, frame[8:12], "length 5, sequence 0")
	require.Equal(t, []byte{0, 0, 0, 12}, frame[28:32], "type UUID_REQUEST")
}

func TestUUIDText(t *testing.T) {
	u, err := ParseUUID("3a1cb984-c4d9-4469-a277-ce2fdfd11f0d")
	require.NoError(t, err)
	require.Equal(t, "3a1cb984-c4d9-4469-a277-ce2fdfd11f0d", u.String())
	w := u.Words()
	require.Equal(t, u, UUIDFromWords(w[:]))
	require.Equal(t, uint32(0x84b91c3a), u.Words()[0])
	for _, bad := range []string{"", "3a1cb984c4d94469a277ce2fdfd11f0d", "3a1cb984-c4d9-4469-a277-ce2fdfd11f0g", "3a1cb984-c4d9-4469-a277_ce2fdfd11f0d"} {
		_, err := ParseUUID(bad)
		require.Error(t, err, bad)
	}
}

var (
	host1 = MustParseUUID("11111111-2222-3333-4444-555555555555")
	host2 = MustParseUUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
)

func everyMessage() []Message {
	h := Header{Route: 0x503, Seq: 2}
	return []Message{
		&UUIDRequest{Header: h},
		&UUIDRequest{Header: h, Old: true},
		&UUIDResponse{Header: h, UUID: host2, SrcRoute: 0x1},
		&PropertiesRequest{Header: h, Src: host1, Dst: host2, Offset: 45},
		&PropertiesResponse{Header: h, Src: host2, Dst: host1, Offset: 45, DataLength: 73, Generation: 0xdeadbeef, Data: make([]uint32, 28)},
		&PropertiesResponse{Header: h, Src: host2, Dst: host1, DataLength: 73, Generation: 7, Data: make([]uint32, MaxPropertiesData)},
		&PropertiesChangedRequest{Header: h, Src: host1},
		&PropertiesChangedResponse{Header: h},
		&ErrorResponse{Header: h, Error: ErrorNotReady},
		&LinkStateStatusRequest{Header: h},
		&LinkStateStatusResponse{Header: h, Status: 0, SLW: 3, TLW: 1, SLS: 0xc, TLS: 4},
		&LinkStateChangeRequest{Header: h, TLW: 3, TLS: 8},
		&LinkStateChangeResponse{Header: h, Status: 1},
	}
}

func TestEveryMessageRoundTrips(t *testing.T) {
	sizes := map[MessageType]int{
		TypeUUIDRequestOld: 32, TypeUUIDRequest: 32, TypeUUIDResponse: 56,
		TypePropertiesRequest: 68, TypePropertiesChangedRequest: 48,
		TypePropertiesChangedResponse: 32, TypeErrorResponse: 36,
		TypeLinkStateStatusRequest: 32, TypeLinkStateStatusResponse: 40,
		TypeLinkStateChangeRequest: 36, TypeLinkStateChangeResponse: 36,
	}
	for _, m := range everyMessage() {
		t.Run(m.MessageType().String(), func(t *testing.T) {
			raw, err := Encode(m)
			require.NoError(t, err)
			frame, err := ctl.Encode(raw)
			require.NoError(t, err)
			size := len(frame) - ctl.CRCSize
			if want, ok := sizes[m.MessageType()]; ok {
				require.Equal(t, want, size)
			} else {
				require.Equal(t, 72+4*len(m.(*PropertiesResponse).Data), size)
			}
			require.Equal(t, uint8(2), frame[8]>>3&3, "sequence number in bits 28:27")
			require.Equal(t, uint8(size/4-3), frame[11]&0x3f, "length excludes three dwords")

			p, err := ctl.Decode(raw.Kind, frame)
			require.NoError(t, err)
			back, err := Decode(p.(*ctl.Raw))
			require.NoError(t, err)
			require.Equal(t, m, back)
		})
	}
}

func TestPropertiesDwordHalves(t *testing.T) {
	// offset is the low half of its dword, so after the BE swap it sits in
	// wire bytes 66..67, data_length in 64..65.
	raw, err := Encode(&PropertiesResponse{Offset: 45, DataLength: 73, Data: []uint32{1}})
	require.NoError(t, err)
	frame, err := ctl.Encode(raw)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 73, 0, 45}, frame[64:68])
}

func TestDecodeRejects(t *testing.T) {
	good, err := Encode(&PropertiesChangedRequest{Header: Header{Route: 1}, Src: host1})
	require.NoError(t, err)
	mutate := func(f func(r *ctl.Raw)) *ctl.Raw {
		r := &ctl.Raw{Header: good.Header, Kind: good.Kind, Body: append([]uint32(nil), good.Body...)}
		f(r)
		return r
	}
	for _, tc := range []struct {
		name string
		raw  *ctl.Raw
		want error
	}{
		{"truncated", mutate(func(r *ctl.Raw) { r.Body = r.Body[:len(r.Body)-1] }), ErrLength},
		{"length field too big", mutate(func(r *ctl.Raw) { r.Body[0]++ }), ErrLength},
		{"length field below five", mutate(func(r *ctl.Raw) { r.Body = r.Body[:3]; r.Body[0] = 4 }), ErrLength},
		{"extra dword", mutate(func(r *ctl.Raw) { r.Body = append(r.Body, 0); r.Body[0]++ }), ErrLength},
		{"other protocol", mutate(func(r *ctl.Raw) { r.Body[1] ^= 1 }), ErrProtocol},
		{"unknown type", mutate(func(r *ctl.Raw) { r.Body[5] = 99 }), ErrType},
		{"request as response", mutate(func(r *ctl.Raw) { r.Kind = ctl.TypeXDomainResponse }), ErrPDF},
		{"not xdomain", mutate(func(r *ctl.Raw) { r.Kind = ctl.TypeICMEvent }), ErrPDF},
		{"empty", &ctl.Raw{Kind: ctl.TypeXDomainRequest}, ErrLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.raw)
			require.ErrorIs(t, err, tc.want)
		})
	}

	_, err = Encode(&PropertiesResponse{Data: make([]uint32, MaxPropertiesData+1)})
	require.ErrorIs(t, err, ErrLength)
	_, err = Encode(&UUIDRequest{Header: Header{Seq: 4}})
	require.ErrorIs(t, err, ErrLength)
}

func TestWrongCRCIsRejectedBeforeXDP(t *testing.T) {
	raw, err := Encode(&UUIDResponse{UUID: host1, SrcRoute: 0x503})
	require.NoError(t, err)
	frame, err := ctl.Encode(raw)
	require.NoError(t, err)
	frame[20] ^= 0xff
	_, err = ctl.Decode(raw.Kind, frame)
	require.ErrorIs(t, err, ctl.ErrCRC)
}

func TestPagedPropertiesRead(t *testing.T) {
	block := make([]uint32, 73)
	for i := range block {
		block[i] = uint32(i * 7)
	}
	var r BlockReader
	var offsets []uint16
	for {
		req := &PropertiesRequest{Header: Header{Route: 1}, Src: host1, Dst: host2, Offset: r.Offset()}
		offsets = append(offsets, req.Offset)
		resp, err := PropertiesPage(req, host2, block, 42)
		require.NoError(t, err)
		require.Equal(t, host1, resp.Dst)
		done, err := r.Add(resp)
		require.NoError(t, err)
		if done {
			break
		}
	}
	require.Equal(t, []uint16{0, 45}, offsets, "73 dwords take two requests")
	got, gen := r.Block()
	require.Equal(t, block, got)
	require.Equal(t, uint32(42), gen)

	_, err := PropertiesPage(&PropertiesRequest{Offset: 73}, host2, block, 42)
	require.ErrorIs(t, err, ErrOffset)
	_, err = PropertiesPage(&PropertiesRequest{}, host2, make([]uint32, 501), 1)
	require.ErrorIs(t, err, ErrTooBig)
}

func TestBlockReaderRejects(t *testing.T) {
	page := func(off, length uint16, gen uint32, n int) *PropertiesResponse {
		return &PropertiesResponse{Offset: off, DataLength: length, Generation: gen, Data: make([]uint32, n)}
	}
	for _, tc := range []struct {
		name  string
		pages []*PropertiesResponse
		want  error
	}{
		{"wrong offset", []*PropertiesResponse{page(3, 10, 1, 5)}, ErrOffset},
		{"too big", []*PropertiesResponse{page(0, 501, 1, 45)}, ErrTooBig},
		{"generation changed", []*PropertiesResponse{page(0, 50, 1, 45), page(45, 50, 2, 5)}, ErrGeneration},
		{"length changed", []*PropertiesResponse{page(0, 50, 1, 45), page(45, 51, 1, 5)}, ErrLength},
		{"overrun", []*PropertiesResponse{page(0, 10, 1, 11)}, ErrLength},
		{"no progress", []*PropertiesResponse{page(0, 10, 1, 0)}, ErrLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r BlockReader
			var err error
			for _, p := range tc.pages {
				if _, err = r.Add(p); err != nil {
					break
				}
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func FuzzXDPMessage(f *testing.F) {
	for _, m := range everyMessage() {
		raw, err := Encode(m)
		require.NoError(f, err)
		frame, err := ctl.Encode(raw)
		require.NoError(f, err)
		f.Add(frame, raw.Kind == ctl.TypeXDomainRequest)
	}
	f.Fuzz(func(t *testing.T, frame []byte, request bool) {
		kind := ctl.TypeXDomainResponse
		if request {
			kind = ctl.TypeXDomainRequest
		}
		p, err := ctl.Decode(kind, frame)
		if err != nil {
			return
		}
		m, err := Decode(p.(*ctl.Raw))
		if err != nil {
			return
		}
		raw, err := Encode(m)
		require.NoError(t, err, "an accepted message must re-encode")
		again, err := ctl.Encode(raw)
		require.NoError(t, err)
		p2, err := ctl.Decode(raw.Kind, again)
		require.NoError(t, err)
		back, err := Decode(p2.(*ctl.Raw))
		require.NoError(t, err)
		require.Equal(t, m, back)
	})
}
