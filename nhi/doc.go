// Package nhi is the user-space driver of a USB4/Thunderbolt native host
// interface (NHI): the BAR0 register map, 16-byte ring descriptors, TX and
// RX rings with doorbells and completions, interrupt vectors and
// throttling, frame and raw mode, E2E flow control, the control channel on
// ring 0, and a zero-copy slot API for the data path.
//
// It does not know streams, files, XDomain discovery or how a Device is
// implemented: backends (nhi/emu, nhi/vfio) implement the small Device
// interface (32-bit BAR0 access, DMA memory with its IOVA, interrupt
// vectors), and the register layout in regs.go is shared with the
// emulator.
//
// # Theory of operation
//
// The NHI has HopCount() TX and RX rings (CAPS bits 10:0). A ring is an
// array of descriptors in DMA memory plus registers: the driver owns head
// (the next descriptor to post), the NHI owns tail. The driver posts a
// descriptor by writing it with POSTED (and INTERRUPT) and then ringing the
// doorbell, once per descriptor:
//
//	TX: write head<<16 to ring +8    RX: write head to ring +8
//
// The NHI processes posted descriptors in order and marks each COMPLETED;
// the driver detects completion by reading the descriptor, never the tail
// register. One descriptor always stays free, so a ring of n holds n-1
// frames. Length 0 means 4096.
//
//	descriptor (16 bytes, little-endian)
//	+0  u64 buffer IOVA
//	+8  length:12 | eof:4 | sof:4 | flags:12 (ISOCH/CRC_ERROR 0x1,
//	    COMPLETED 0x2, POSTED/BUFFER_OVERRUN 0x4, INTERRUPT 0x8)
//	+12 u32 time (0)
//
// Each Ring owns one contiguous DMA buffer of Size × 4 KiB; descriptor i
// always uses slot i. TX: TxSlot gives the free slot at head, the caller
// fills it in place and TxPost posts it (Write copies a byte slice into
// ⌈n/4096⌉ frames). RX: Start posts Size-1 slots (RX is primed before any
// path can deliver), RxFrame returns completed frames in place and
// RxRelease re-posts their slots, which is also what returns E2E credits
// to the sender.
//
// Interrupt mode binds each started ring to an MSI-X vector (its own while
// vectors last; throttling applies only then) and reaps completions on the
// vector's goroutine; RingNoInterrupt rings are reaped by the caller
// (Poll, or the busy waits of WaitTx/WaitRx). Stop cancels posted frames
// and resets the ring; Flush waits for in-flight frames.
//
// The control channel (OpenControl) runs ring 0 in RAW mode: frames of at
// most 256 bytes whose SOF and EOF PDF are the packet type, body dwords
// big-endian with a trailing CRC-32C (package xdomain/ctl encodes them).
// Requests are matched to responses by type, route, size and (config
// reads and writes) sequence number; config accesses are retried 4 times
// with seq = attempt. An ERROR packet answers the oldest request to its
// route (Linux lets any ERROR match any request, which can complete the
// wrong one when requests to several routes are outstanding). Hot-plug EVENTs are acknowledged and then passed to
// the handler with every other unsolicited packet.
package nhi
