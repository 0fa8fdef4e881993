package nhi

// BAR0 register map of the NHI (Linux nhi_regs.h; reference §2.2). Offsets
// are byte offsets into BAR0; every access is one aligned 32-bit word. The
// emulated NHI in nhi/emu implements exactly these semantics, so the driver
// and the emulator share this file.

// Reg is a byte offset into BAR0.
type Reg uint32

// Per-ring descriptor blocks, 16 bytes per ring:
//
//	TX (RegTxRingBase + 16·hop):
//	  +0  u64 descriptor array IOVA, written low dword then high
//	  +8  u16 tail (written by the NHI), u16 head = producer (software)
//	  +12 u16 descriptor count
//	RX (RegRxRingBase + 16·hop):
//	  +0  u64 descriptor array IOVA
//	  +8  u16 head = first not-posted (software), u16 tail (NHI)
//	  +12 u16 descriptor count, u16 frame size (0 = 4096 in frame mode)
const (
	RegTxRingBase      Reg = 0x00000
	RegRxRingBase      Reg = 0x08000
	RingBlockSize          = 16
	RingAddrLo             = 0  // +0
	RingAddrHi             = 4  // +4
	RingIndices            = 8  // +8: TX {tail, head<<16}, RX {head, tail<<16}
	RingSizeReg            = 12 // +12: count (low 16), RX frame size (high 16)
	RingIndexMask          = 0xffff
	RingTxHeadShift        = 16 // TX doorbell: head in the upper half
	RingRxTailShift        = 16 // RX: NHI tail in the upper half
	RingFrameSizeShift     = 16
)

// Per-ring options, 32 bytes per ring:
//
//	+0 ring flags (RingFlag*), RX: E2E TX HopID in bits 22:12
//	+4 TX: 0 ("isoch time stamp"); RX: sof_mask<<16 | eof_mask
const (
	RegTxOptionsBase Reg = 0x19800
	RegRxOptionsBase Reg = 0x29800
	RingOptionsSize      = 32
	RingOptionsPDF       = 4 // +4

	RxOptionsE2EHopMask  = 0x7ff << RxOptionsE2EHopShift // REG_RX_OPTIONS_E2E_HOP_MASK, GENMASK(22,12)
	RxOptionsE2EHopShift = 12
)

// Hardware ring flags in options+0 (RING_FLAG_* of nhi_regs.h).
const (
	RingFlagIsochEnable     uint32 = 1 << 27
	RingFlagE2EFlowControl  uint32 = 1 << 28
	RingFlagPCINoSnoop      uint32 = 1 << 29
	RingFlagRaw             uint32 = 1 << 30
	RingFlagEnable          uint32 = 1 << 31
	RingOptionsFlagsAllowed        = RingFlagIsochEnable | RingFlagE2EFlowControl | RingFlagPCINoSnoop | RingFlagRaw | RingFlagEnable
)

// Interrupt registers. Ring interrupt index: TX ring n is n, RX ring n is
// hopCount+n; RX overflow of ring n is notify bit 2·hopCount+n.
const (
	// RegRingNotifyBase: three bitfields of hopCount bits (TX done, RX done,
	// RX overflow), (31+3·hops)/32 dwords, cleared on read.
	RegRingNotifyBase Reg = 0x37800
	// RegRingIntClear: write-1-to-clear status in non-auto-clear mode.
	RegRingIntClear Reg = 0x37808
	// RegRingInterruptBase: enable bits, TX then RX, (31+2·hops)/32 dwords.
	RegRingInterruptBase Reg = 0x38200
	// RegRingInterruptMaskClearBase: write bits to mask (non-auto-clear mode).
	RegRingInterruptMaskClearBase Reg = 0x38208
	// RegIntThrottlingRate + 4·vector: bits 15:0, interval in 256 ns units.
	RegIntThrottlingRate     Reg = 0x38c00
	IntThrottlingIntervalMax     = 0xffff
	IntThrottlingUnitNs          = 256
	// RegIntVecAlloc (IVR): 4 bits per ring interrupt index, 8 per dword.
	RegIntVecAlloc    Reg = 0x38c40
	IntVecAllocBits       = 4
	IntVecAllocPerReg     = 8
	IntVecAllocMask       = 0xf
	MaxVectors            = 16 // MSIX_MAX_VECS; IVR holds 4-bit vectors
)

// Capability, control and mailbox registers.
const (
	RegCaps             Reg    = 0x39640
	CapsHopCountMask    uint32 = 0x3ff // bits 10:0, the code masks 0x3ff
	CapsVersionShift           = 16
	CapsVersionMask     uint32 = 0xff << CapsVersionShift
	CapsVersion2        uint32 = 0x40
	RegDMAMisc          Reg    = 0x39864
	DMAMiscIntAutoClear uint32 = 1 << 2  // Intel: status clears on delivery
	DMAMiscDisableAuto  uint32 = 1 << 17 // others: W1C through RegRingIntClear
	RegReset            Reg    = 0x39898
	ResetHRR            uint32 = 1 << 0 // host router reset
	RegInmailData       Reg    = 0x39900
	RegInmailCmd        Reg    = 0x39904
	RegOutmailCmd       Reg    = 0x3990c
	RegFWStatus         Reg    = 0x39944

	// BAR0Size is the extent of the register map (the largest offset used,
	// rounded up to a page).
	BAR0Size = 0x3a000
)

// TxRingReg returns the offset of field (RingAddrLo…RingSizeReg) of TX ring hop.
func TxRingReg(hop int, field Reg) Reg { return RegTxRingBase + Reg(hop)*RingBlockSize + field }

// RxRingReg returns the offset of field of RX ring hop.
func RxRingReg(hop int, field Reg) Reg { return RegRxRingBase + Reg(hop)*RingBlockSize + field }

// TxOptionsReg returns the offset of field (0 or RingOptionsPDF) of TX ring hop's options.
func TxOptionsReg(hop int, field Reg) Reg {
	return RegTxOptionsBase + Reg(hop)*RingOptionsSize + field
}

// RxOptionsReg returns the offset of field of RX ring hop's options.
func RxOptionsReg(hop int, field Reg) Reg {
	return RegRxOptionsBase + Reg(hop)*RingOptionsSize + field
}

// InterruptIndex returns the ring interrupt index of a ring.
func InterruptIndex(hopCount, hop int, rx bool) int {
	if rx {
		return hopCount + hop
	}
	return hop
}

// NotifyRegCount is RING_NOTIFY_REG_COUNT: dwords of the notify bitfields.
func NotifyRegCount(hopCount int) int { return (31 + 3*hopCount) / 32 }

// InterruptRegCount is RING_INTERRUPT_REG_COUNT: dwords of enable bits.
func InterruptRegCount(hopCount int) int { return (31 + 2*hopCount) / 32 }

// IVRReg returns the IVR dword and shift holding ring interrupt index idx.
func IVRReg(idx int) (Reg, uint) {
	return RegIntVecAlloc + Reg(idx/IntVecAllocPerReg)*4, uint(idx%IntVecAllocPerReg) * IntVecAllocBits
}
