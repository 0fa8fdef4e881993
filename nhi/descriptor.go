package nhi

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// Ring descriptors (struct ring_desc, reference §2.3): 16 bytes,
// little-endian, in DMA memory shared by driver and NHI.
//
//	byte 0..7   buffer IOVA
//	byte 8..11  bits 11:0 length (0 = 4096), 15:12 EOF PDF, 19:16 SOF PDF,
//	            31:20 flags (12 bits)
//	byte 12..15 time (0)
//
// Driver and device run concurrently. The control dword is the one both
// sides write while the other may read it, so it is always accessed
// atomically: the device's COMPLETED store publishes the frame it wrote,
// the driver's POSTED store (followed by the doorbell) publishes the
// buffer. The address and time dwords are written before that store and
// read only after the doorbell, so plain accesses suffice.
const (
	DescSize     = 16
	DescAddrLo   = 0
	DescAddrHi   = 4
	DescControl  = 8
	DescTime     = 12
	DescLenMask  = 0xfff
	DescEOFShift = 12
	DescSOFShift = 16
	DescPDFMask  = 0xf

	// Flags inside the control dword (12-bit field at bit 20).
	DescFlagsShift               = 20
	DescFlagISOCH         uint32 = 0x1 << DescFlagsShift // TX
	DescFlagCRCError      uint32 = 0x1 << DescFlagsShift // RX, set by the NHI
	DescFlagCompleted     uint32 = 0x2 << DescFlagsShift // set by the NHI
	DescFlagPosted        uint32 = 0x4 << DescFlagsShift // "always set this"
	DescFlagBufferOverrun uint32 = 0x4 << DescFlagsShift // RX completion
	DescFlagInterrupt     uint32 = 0x8 << DescFlagsShift
	DescFlagsMask         uint32 = 0xfff << DescFlagsShift
)

// Frame sizes (TB_FRAME_SIZE, TB_MAX_FRAME_SIZE).
const (
	FrameSize    = 256  // raw-mode frame and minimum RX buffer
	MaxFrameSize = 4096 // frame-mode frame; one slot
	SlotSize     = MaxFrameSize
)

// ControlWord assembles a descriptor control dword. size 4096 is encoded
// as 0.
func ControlWord(size int, sof, eof uint8, flags uint32) uint32 {
	return uint32(size)&DescLenMask | uint32(eof&DescPDFMask)<<DescEOFShift |
		uint32(sof&DescPDFMask)<<DescSOFShift | flags&DescFlagsMask
}

// ControlSize returns the frame size of a control dword (0 means 4096).
func ControlSize(w uint32) int {
	if n := int(w & DescLenMask); n != 0 {
		return n
	}
	return MaxFrameSize
}

// ControlSOF and ControlEOF return the PDFs of a control dword.
func ControlSOF(w uint32) uint8 { return uint8(w >> DescSOFShift & DescPDFMask) }
func ControlEOF(w uint32) uint8 { return uint8(w >> DescEOFShift & DescPDFMask) }

var bigEndianHost = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

func toLE(v uint32) uint32 {
	if bigEndianHost {
		return bits.ReverseBytes32(v)
	}
	return v
}

func word(mem []byte, off int) *uint32 {
	if off < 0 || off+4 > len(mem) || off%4 != 0 {
		panic("nhi: descriptor dword out of range")
	}
	return (*uint32)(unsafe.Pointer(&mem[off]))
}

// LoadLE32 atomically reads the little-endian dword at mem[off:]; off must
// be 4-aligned within page-aligned DMA memory.
func LoadLE32(mem []byte, off int) uint32 { return toLE(atomic.LoadUint32(word(mem, off))) }

// StoreLE32 atomically writes v little-endian at mem[off:].
func StoreLE32(mem []byte, off int, v uint32) { atomic.StoreUint32(word(mem, off), toLE(v)) }

// LoadDescAddr reads the buffer IOVA of descriptor i of a ring; call it
// only after the doorbell published the descriptor.
func LoadDescAddr(ring []byte, i int) uint64 {
	return binary.LittleEndian.Uint64(ring[i*DescSize+DescAddrLo:])
}

// LoadDescControl reads the control dword of descriptor i.
func LoadDescControl(ring []byte, i int) uint32 { return LoadLE32(ring, i*DescSize+DescControl) }

// StoreDescControl writes the control dword of descriptor i.
func StoreDescControl(ring []byte, i int, w uint32) { StoreLE32(ring, i*DescSize+DescControl, w) }

// StoreDesc writes a whole descriptor; the control dword goes last, with
// one atomic store, so that it publishes the others.
func StoreDesc(ring []byte, i int, addr uint64, control uint32) {
	o := i * DescSize
	binary.LittleEndian.PutUint64(ring[o+DescAddrLo:], addr)
	binary.LittleEndian.PutUint32(ring[o+DescTime:], 0)
	StoreLE32(ring, o+DescControl, control)
}
