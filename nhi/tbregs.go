package nhi

// Router configuration spaces (Linux tb_regs.h, USB4 spec names), reached
// by control-channel READ and WRITE packets. Offsets are in dwords within
// the space; the emulated host router in nhi/emu implements them and the
// DMA path set-up in xdomain writes them.

// Router configuration space (TB_CFG_SWITCH).
const (
	RouterCS0 = 0 // vendor ID 15:0, device ID 31:16
	RouterCS1 = 1 // next cap 7:0, upstream adapter 13:8, max adapter 19:14, depth 22:20, revision 31:24
	RouterCS2 = 2 // topology ID (route) low
	RouterCS3 = 3 // topology ID high 30:0, valid 31
	RouterCS7 = 7 // UID low dword (usb4_switch_read_uid reads CS_7..CS_8)
	RouterCS8 = 8 // UID high dword

	RouterCS1UpstreamShift   = 8
	RouterCS1UpstreamMask    = 0x3f << RouterCS1UpstreamShift
	RouterCS1MaxAdapterShift = 14
	RouterCS1MaxAdapterMask  = 0x3f << RouterCS1MaxAdapterShift
	RouterCS1DepthShift      = 20
	RouterCS1DepthMask       = 0x7 << RouterCS1DepthShift
)

// Adapter configuration space (TB_CFG_PORT), struct tb_regs_port_header.
const (
	AdpCS0 = 0 // vendor ID, device ID
	AdpCS1 = 1 // next cap, max counters, revision
	AdpCS2 = 2 // adapter type 23:0
	AdpCS3 = 3 // adapter number 25:20
	AdpCS4 = 4 // NFC buffers 9:0, total buffers 29:20
	AdpCS5 = 5 // max input HopID 10:0, max output HopID 21:11

	AdpCS2TypeMask          = 0xffffff
	AdpCS3AdapterShift      = 20
	AdpCS3AdapterMask       = 0x3f << AdpCS3AdapterShift
	AdpCS4NFCBuffersMask    = 0x3ff                            // ADP_CS_4_NFC_BUFFERS_MASK
	AdpCS4TotalBuffersShift = 20                               // ADP_CS_4_TOTAL_BUFFERS_SHIFT
	AdpCS4TotalBuffersMask  = 0x3ff << AdpCS4TotalBuffersShift // ADP_CS_4_TOTAL_BUFFERS_MASK
	AdpCS5MaxInHopIDMask    = 0x7ff
	AdpCS5MaxOutHopIDShift  = 11
	AdpCS5MaxOutHopIDMask   = 0x7ff << AdpCS5MaxOutHopIDShift
)

// Adapter types (enum tb_port_type).
const (
	AdapterInactive uint32 = 0x000000 // TB_TYPE_INACTIVE (also the control adapter 0)
	AdapterLane     uint32 = 0x000001 // TB_TYPE_PORT
	AdapterNHI      uint32 = 0x000002 // TB_TYPE_NHI
)

// Path configuration space (TB_CFG_HOPS): one two-dword entry per input
// HopID of the adapter (struct tb_regs_hop), at dword offset 2·HopID.
const (
	PathEntryWords = 2

	// DWORD 0
	PathCS0OutHopIDMask    = 0x7ff // output HopID 10:0
	PathCS0OutAdapterShift = 11    // output adapter 16:11
	PathCS0OutAdapterMask  = 0x3f << PathCS0OutAdapterShift
	PathCS0CreditsShift    = 17 // initial (hop) credits 23:17
	PathCS0CreditsMask     = 0x7f << PathCS0CreditsShift
	PathCS0PMPS            = 1 << 24 // pmps
	PathCS0Valid           = 1 << 31 // enable

	// DWORD 1
	PathCS1WeightMask    = 0xf // weight 3:0
	PathCS1PriorityShift = 8   // priority 10:8
	PathCS1PriorityMask  = 0x7 << PathCS1PriorityShift
	PathCS1Drop          = 1 << 11 // drop packets
	PathCS1CounterEnable = 1 << 23
	PathCS1IngressFC     = 1 << 24
	PathCS1EgressFC      = 1 << 25
	PathCS1IngressShared = 1 << 26
	PathCS1EgressShared  = 1 << 27
	PathCS1Pending       = 1 << 28 // pending: packets still in the path's buffers (polled while it drains)
)

// Path entry of HopID 0 of a lane adapter: the control path, whose
// initial credits are the adapter's buffers reserved for control packets
// (ctl_credits; Linux takes 2 when the entry says 0).
const (
	ControlPathHopID      = 0
	DefaultControlCredits = 2
)

// MinHopID is the first HopID a path may use (TB_PATH_MIN_HOPID); 0..7 are
// reserved by the protocol.
const MinHopID = 8

// DMA path parameters (tb_dma_init_rx_path / tb_dma_init_tx_path).
const (
	DMAPathPriority = 5
	DMAPathWeight   = 1
	DMACredits      = 14 // TB_DMA_CREDITS
)

// Flow control of the single hop of a DMA path in the host router, as
// tb_path_activate derives it from tb_dma_init_rx_path/tx_path: ingress
// flow control on every hop (TB_PATH_ALL); egress flow control on a TX
// path (TB_PATH_ALL) but not on an RX path, whose only hop is the path's
// destination and whose egress mask is TB_PATH_SOURCE|TB_PATH_INTERNAL.
const (
	DMARxPathFC = PathCS1IngressFC
	DMATxPathFC = PathCS1IngressFC | PathCS1EgressFC
)

// PathEntry encodes a valid path entry forwarding to outHopID on
// outAdapter with the DMA path parameters: priority 5, weight 1, the flow
// control bits fc (DMARxPathFC or DMATxPathFC), no shared buffers, no
// counter.
func PathEntry(outAdapter uint8, outHopID uint16, credits uint8, fc uint32) [PathEntryWords]uint32 {
	return [PathEntryWords]uint32{
		uint32(outHopID)&PathCS0OutHopIDMask | uint32(outAdapter)<<PathCS0OutAdapterShift&PathCS0OutAdapterMask |
			uint32(credits)<<PathCS0CreditsShift&PathCS0CreditsMask | PathCS0Valid,
		DMAPathWeight | DMAPathPriority<<PathCS1PriorityShift | fc&(PathCS1IngressFC|PathCS1EgressFC),
	}
}

// PathEntryCredits returns the initial credits of a path entry.
func PathEntryCredits(e [PathEntryWords]uint32) uint8 {
	return uint8(e[0] & PathCS0CreditsMask >> PathCS0CreditsShift)
}

// PathEntryTarget decodes where a path entry forwards and whether it is
// valid.
func PathEntryTarget(e [PathEntryWords]uint32) (outAdapter uint8, outHopID uint16, valid bool) {
	return uint8(e[0] & PathCS0OutAdapterMask >> PathCS0OutAdapterShift), uint16(e[0] & PathCS0OutHopIDMask), e[0]&PathCS0Valid != 0
}
