package nhi

import "errors"

// Device is the one interface below the driver: what an NHI backend
// (nhi/emu, nhi/vfio) gives it. Register accesses are single aligned 32-bit
// BAR0 accesses; they may be called from any goroutine.
type Device interface {
	// Read32 and Write32 access the BAR0 register at byte offset off.
	Read32(off Reg) uint32
	Write32(off Reg, v uint32)
	// AllocDMA returns size bytes (rounded up to a page) of zeroed memory the
	// device can reach at the returned IOVA.
	AllocDMA(size int) (Memory, error)
	// Vectors returns the interrupt vectors (MSI-X), in vector order. Each
	// channel receives a value when its vector fires; signals coalesce
	// (capacity 1), as an eventfd's counter does.
	Vectors() []<-chan struct{}
	// Close releases the device; DMA memory and vectors become invalid.
	Close() error
}

// An InlineDevice is a Device that can run a vector's interrupt handler
// itself, on the goroutine that raises the interrupt, instead of
// signalling the vector's channel for the driver's goroutine to read: an
// emulated NHI raises its interrupts from code (a cable's reader, a
// doorbell's writer), and a hand-off to another goroutine would cost a
// wake-up per delivery. The driver's handler reaps the vector's rings and
// wakes their waiters; it never blocks and takes only the driver's ring
// locks, so the device must not hold any lock of its own that a register
// access of the driver takes while it calls the handler. A nil handler
// goes back to signalling the channel.
type InlineDevice interface {
	Device
	SetVectorHandler(vector int, handler func())
}

// Memory is a DMA buffer of a Device.
type Memory interface {
	// Bytes is the CPU view of the buffer, page-aligned.
	Bytes() []byte
	// IOVA is the address the device uses for Bytes()[0].
	IOVA() uint64
	// Free returns the buffer to the device.
	Free() error
}

// PageSize is the DMA allocation granule.
const PageSize = 4096

// ErrClosed is returned by operations on a closed device, ring or channel.
var ErrClosed = errors.New("nhi: closed")
