package emu

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"tbstream/nhi"
)

// Cable frame layout (see the package doc): an 8-byte header, big-endian,
// then the payload.
const (
	CableHeaderSize = 8
	cableKindOff    = 0 // u8 kind
	cablePDFOff     = 1 // u8 SOF<<4 | EOF
	cableHopOff     = 2 // u16 HopID
	cableLenOff     = 4 // u16 payload length
	cableResOff     = 6 // u16 reserved, zero

	// CableMaxHopID is the largest HopID a frame can name (11 bits).
	CableMaxHopID = 0x7ff
	// CableVersion is the framing version in the hello. Version 2 added
	// the nonce, the key flag and the AUTH frame (the handshake of the
	// package doc); a peer of another version is refused at the hello.
	CableVersion = 2

	cableCreditSize = 4 // u32 credits
	cableShmSize    = 4 // u32 ring size
)

// HELLO payload layout (see the package doc), big-endian.
const (
	cableHelloSize    = 80 // the whole payload, version 2
	cableHelloMinSize = 8  // magic and version: enough to name another version
	helloMagicOff     = 0  // [4]byte "TBSC"
	helloVersionOff   = 4  // u16 CableVersion
	helloFlagsOff     = 6  // u16 flags (helloFlag…)
	helloUIDOff       = 8  // u64 router UID
	helloNonceOff     = 16 // [32]byte random nonce
	helloTagOff       = 48 // [32]byte key tag (HMAC-SHA256), zero without a key
	helloTaggedSize   = helloTagOff
	cableNonceSize    = 32
	cableTagSize      = sha256.Size

	// helloFlagKey: the sender holds a cable key and requires its peer to
	// prove the same key with an AUTH frame.
	helloFlagKey = 1 << 0
	// helloFlagShm: the sender, on a unix socket, offers to carry the
	// cable through shared memory (see shm.go); the listener answers
	// with a SHM frame when both hellos have it.
	helloFlagShm   = 1 << 1
	helloFlagsMask = helloFlagKey | helloFlagShm

	// cableAuthSize is the AUTH payload: an HMAC-SHA256.
	cableAuthSize = sha256.Size
)

// CableKind is the kind of a cable frame.
type CableKind uint8

// Cable frame kinds.
const (
	CableHello       CableKind = 1 // first frame each way: magic, version, flags, router UID, nonce
	CableData        CableKind = 2 // a DMA frame: HopID, SOF/EOF PDFs, 1..4096 bytes
	CableControl     CableKind = 3 // a control frame (PDF in EOF), 4..256 bytes, CRC included
	CableCredit      CableKind = 4 // E2E credits for a HopID: u32 count
	CableCreditReset CableKind = 5 // withdraw every credit granted for a HopID
	CableUnplug      CableKind = 6 // orderly disconnect
	CableAuth        CableKind = 7 // the handshake's proof of the key: HMAC-SHA256
	CableShm         CableKind = 8 // the listener's answer to a shared-memory offer: u32 ring size, 0 declines
)

var cableMagic = [4]byte{'T', 'B', 'S', 'C'}

// ErrMalformed is returned for a cable frame that breaks the framing rules.
var ErrMalformed = errors.New("malformed cable frame")

// cableFrame is one decoded cable frame; Payload aliases the reader's
// buffer until the next read.
type cableFrame struct {
	Kind     CableKind
	SOF, EOF uint8
	HopID    uint16
	Payload  []byte
}

// payloadLimits gives the allowed payload sizes of each kind.
func payloadLimits(k CableKind) (lo, hi int, ok bool) {
	switch k {
	case CableHello:
		return cableHelloMinSize, cableHelloSize, true
	case CableAuth:
		return cableAuthSize, cableAuthSize, true
	case CableData:
		return 1, nhi.MaxFrameSize, true
	case CableControl:
		return 4, nhi.FrameSize, true
	case CableCredit:
		return cableCreditSize, cableCreditSize, true
	case CableShm:
		return cableShmSize, cableShmSize, true
	case CableCreditReset, CableUnplug:
		return 0, 0, true
	}
	return 0, 0, false
}

// appendCableFrame encodes f after dst.
func appendCableFrame(dst []byte, f cableFrame) []byte {
	var hdr [CableHeaderSize]byte
	hdr[cableKindOff] = byte(f.Kind)
	hdr[cablePDFOff] = f.SOF<<4 | f.EOF&0xf
	binary.BigEndian.PutUint16(hdr[cableHopOff:], f.HopID)
	binary.BigEndian.PutUint16(hdr[cableLenOff:], uint16(len(f.Payload)))
	return append(append(dst, hdr[:]...), f.Payload...)
}

// parseCableHeader checks a header and returns the frame it announces,
// without payload, and the payload length.
func parseCableHeader(hdr []byte) (cableFrame, int, error) {
	f := cableFrame{
		Kind:  CableKind(hdr[cableKindOff]),
		SOF:   hdr[cablePDFOff] >> 4,
		EOF:   hdr[cablePDFOff] & 0xf,
		HopID: binary.BigEndian.Uint16(hdr[cableHopOff:]),
	}
	n := int(binary.BigEndian.Uint16(hdr[cableLenOff:]))
	lo, hi, ok := payloadLimits(f.Kind)
	switch {
	case !ok:
		return f, 0, fmt.Errorf("kind %d: %w", f.Kind, ErrMalformed)
	case n < lo || n > hi:
		return f, 0, fmt.Errorf("kind %d with %d payload bytes: %w", f.Kind, n, ErrMalformed)
	case binary.BigEndian.Uint16(hdr[cableResOff:]) != 0:
		return f, 0, fmt.Errorf("reserved header bits set: %w", ErrMalformed)
	case f.HopID > CableMaxHopID:
		return f, 0, fmt.Errorf("HopID %d: %w", f.HopID, ErrMalformed)
	case f.Kind == CableControl && (n%4 != 0 || f.SOF != f.EOF):
		return f, 0, fmt.Errorf("control frame of %d bytes, PDFs %d/%d: %w", n, f.SOF, f.EOF, ErrMalformed)
	case f.Kind != CableData && f.Kind != CableControl && hdr[cablePDFOff] != 0:
		return f, 0, fmt.Errorf("kind %d with PDFs: %w", f.Kind, ErrMalformed)
	case (f.Kind == CableHello || f.Kind == CableAuth || f.Kind == CableControl || f.Kind == CableUnplug || f.Kind == CableShm) && f.HopID != 0:
		return f, 0, fmt.Errorf("kind %d with HopID %d: %w", f.Kind, f.HopID, ErrMalformed)
	}
	return f, n, nil
}

// minReaderSize is the smallest bufio.Reader readCableFrame can use: the
// largest frame must fit its buffer.
const minReaderSize = CableHeaderSize + nhi.MaxFrameSize

// cableReader is what cable frames are read from: a bufio.Reader over a
// socket, or a shared-memory ring (shmReader). Peeked bytes stay valid
// until the next Peek.
type cableReader interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
	Size() int
}

// cableWriter is what cable frames are written to: a bufio.Writer over a
// socket, or a shared-memory ring (shmWriter). Written bytes reach the
// peer at the latest at Flush.
type cableWriter interface {
	io.Writer
	Flush() error
	Buffered() int
}

// shmOfferPayload is the payload of the SHM frame that accepts an offer.
func shmOfferPayload() []byte { return binary.BigEndian.AppendUint32(nil, shmRingSize) }

// readCableFrame reads one frame. Its payload aliases r's buffer and stays
// valid until the next read from r, which saves copying it. io.EOF means
// the cable closed cleanly between frames.
func readCableFrame(r cableReader) (cableFrame, error) {
	hdr, err := r.Peek(CableHeaderSize)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return cableFrame{}, err
	}
	f, n, err := parseCableHeader(hdr)
	if err != nil {
		return f, err
	}
	if r.Size() < minReaderSize {
		return f, fmt.Errorf("cable reader buffer of %d bytes, need %d", r.Size(), minReaderSize)
	}
	all, err := r.Peek(CableHeaderSize + n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return f, err
	}
	r.Discard(len(all))
	f.Payload = all[CableHeaderSize:]
	if f.Kind == CableHello {
		if err := checkHello(f.Payload); err != nil {
			return f, err
		}
	}
	return f, nil
}

// cableHello is a decoded HELLO payload.
type cableHello struct {
	Flags uint16
	UID   uint64
	Nonce [cableNonceSize]byte
	Tag   [cableTagSize]byte
}

// checkHello checks a HELLO payload of cableHelloMinSize..cableHelloSize
// bytes: magic first, then the version, so that a peer of another version
// is named as such, then the length and flags of this version.
func checkHello(p []byte) error {
	if [4]byte(p[helloMagicOff:]) != cableMagic {
		return fmt.Errorf("hello magic %q: %w", p[helloMagicOff:helloMagicOff+4], ErrMalformed)
	}
	if v := binary.BigEndian.Uint16(p[helloVersionOff:]); v != CableVersion {
		return fmt.Errorf("hello version %d, want %d (the peer runs another tbstream release): %w", v, CableVersion, ErrMalformed)
	}
	if len(p) != cableHelloSize {
		return fmt.Errorf("hello of %d bytes, want %d: %w", len(p), cableHelloSize, ErrMalformed)
	}
	fl := binary.BigEndian.Uint16(p[helloFlagsOff:])
	if fl&^helloFlagsMask != 0 {
		return fmt.Errorf("hello flags %#x: %w", fl, ErrMalformed)
	}
	if fl&helloFlagKey == 0 && [cableTagSize]byte(p[helloTagOff:]) != [cableTagSize]byte{} {
		return fmt.Errorf("hello with a key tag but no key flag: %w", ErrMalformed)
	}
	return nil
}

// decodeHello decodes a payload checkHello accepted.
func decodeHello(p []byte) cableHello {
	return cableHello{
		Flags: binary.BigEndian.Uint16(p[helloFlagsOff:]),
		UID:   binary.BigEndian.Uint64(p[helloUIDOff:]),
		Nonce: [cableNonceSize]byte(p[helloNonceOff:]),
		Tag:   [cableTagSize]byte(p[helloTagOff:]),
	}
}

// payload encodes the hello.
func (hl cableHello) payload() []byte {
	p := make([]byte, cableHelloSize)
	copy(p[helloMagicOff:], cableMagic[:])
	binary.BigEndian.PutUint16(p[helloVersionOff:], CableVersion)
	binary.BigEndian.PutUint16(p[helloFlagsOff:], hl.Flags)
	binary.BigEndian.PutUint64(p[helloUIDOff:], hl.UID)
	copy(p[helloNonceOff:], hl.Nonce[:])
	copy(p[helloTagOff:], hl.Tag[:])
	return p
}
