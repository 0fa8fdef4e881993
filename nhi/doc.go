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
// TX buffers live in pools (TxPool: 4 KiB buffers in one DMA
// allocation), not in ring slots: a TX descriptor carries any free buffer
// of any pool of the NHI, the ring remembers which one per descriptor and
// gives it back to its pool when the completion is reaped or the ring
// stops. Every TX ring has a pool of its own of Size buffers; a user that
// lends memory for longer than one call (the stream service lends WRITE
// buffers to its CUSE server) allocates its own with AllocTxPool, which
// outlives rings: Close frees its memory only once every buffer is back.
// One batched API serves both: reserve buffers into a TxBuffers
// (Ring.TxReserve from the ring's pool, as many as there are free
// descriptors; TxPool.Reserve from another pool), fill them in place front to back
// (Runs merges adjacent buffers), and post a prefix with Ring.TxCommit:
// one doorbell, as many frames as there are free descriptors (a short
// post of whole frames), the posted buffers leaving the TxBuffers;
// Release gives back the rest. Free buffers go out oldest first, so a
// steady stream gets contiguous runs. Ring.Write copies a byte slice
// through the same calls.
//
//	free ──Reserve──► reserved ──TxCommit──► posted ──reaped or Stop──► free
//	                     └───────────────── Release ─────────────────────┘
//
// RX rings keep one contiguous DMA buffer of Size × 4 KiB, descriptor i
// always using slot i: Start posts Size-1 slots (RX is primed before any
// path can deliver), RxGather returns completed frames in place (adjacent
// slots merged) and RxRelease re-posts their slots, which is also what
// returns E2E credits to the sender.
//
// Interrupt mode binds each started ring to an MSI-X vector (its own while
// vectors last; throttling applies only then) and reaps completions on the
// vector's goroutine; RingNoInterrupt rings are reaped by the caller
// (Poll, or the busy waits of WaitTx/WaitRx). Stop cancels posted frames
// and resets the ring; Flush waits for in-flight frames.
//
// The control channel (OpenControl) runs ring 0 in RAW mode: frames of at
// most 256 bytes whose SOF and EOF PDF are the packet type, body dwords
// big-endian with a trailing CRC-32C (package nhi/ctl encodes them).
// Requests are matched to responses by type, route, size and (config
// reads and writes) sequence number; config accesses are retried 4 times
// with seq = attempt. An ERROR packet answers the oldest request to its
// route (Linux lets any ERROR match any request, which can complete the
// wrong one when requests to several routes are outstanding). Hot-plug EVENTs are acknowledged and then passed to
// the handler with every other unsolicited packet.
//
// # Differences from Linux
//
//   - A started RX ring posts every slot but one and writes the producer
//     index once; Linux writes it after each descriptor.
//   - Interrupt throttling is written only for a vector the ring has to
//     itself: rings share vectors when they outnumber them, where Linux
//     gives each ring its own. REG_DMA_MISC's auto-clear bit is set once at
//     probe (Linux: at the first ring's interrupt activation).
//   - The control channel keeps one config READ/WRITE in flight at a time:
//     a reply names the responder's upstream adapter, not the one asked
//     about, so concurrent requests could take each other's replies (Linux
//     serializes them under the domain lock).
package nhi
