package xdp

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// UUID is a UUID in canonical byte order (the order of its text form).
type UUID [16]byte

// ProtocolUUID identifies XDomain discovery messages; messages carrying
// another protocol UUID belong to other handlers (ThunderboltIP, …).
var ProtocolUUID = MustParseUUID("b638d70e-42ff-40bb-97c2-90e2c0b2ff07")

// ParseUUID parses the 36-character text form.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("parse uuid %q: not in 8-4-4-4-12 form", s)
	}
	compact := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(u[:], []byte(compact)); err != nil {
		return u, fmt.Errorf("parse uuid %q: %w", s, err)
	}
	return u, nil
}

// MustParseUUID is ParseUUID for constants; it panics on a malformed string.
func MustParseUUID(s string) UUID {
	u, err := ParseUUID(s)
	if err != nil {
		panic(err)
	}
	return u
}

func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], u[10:16])
	return string(b[:])
}

// Words returns the four host-order dwords Linux puts on the wire for u.
// Linux copies the raw uuid_t into a u32 array on a little-endian CPU and
// then converts every dword to big-endian, so each 4-byte group appears
// reversed on the wire: canonical b6 38 d7 0e … is sent as 0e d7 38 b6 ….
func (u UUID) Words() [4]uint32 {
	var w [4]uint32
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(u[4*i:])
	}
	return w
}

// UUIDFromWords is the inverse of UUID.Words; words must hold 4 dwords.
func UUIDFromWords(words []uint32) UUID {
	var u UUID
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint32(u[4*i:], words[i])
	}
	return u
}
