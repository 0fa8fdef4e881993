package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"tbstream/nhi"
)

// qemu's edu device (hw/misc/edu.c, docs/specs/edu.rst): PCI 1234:11e8,
// BAR0 1 MiB of 32-bit registers (64-bit allowed from 0x80), one MSI vector.
const (
	eduRegID        nhi.Reg = 0x00 // identification, 0xRRrr00ed
	eduRegLiveness  nhi.Reg = 0x04 // card liveness check: reads back ~written
	eduRegIRQStatus nhi.Reg = 0x24 // interrupt status: OR of the raised values
	eduRegIRQRaise  nhi.Reg = 0x60 // raise interrupt: ORs the value into the status
	eduRegIRQAck    nhi.Reg = 0x64 // interrupt acknowledge: clears those bits
	eduRegDMASrc    nhi.Reg = 0x80 // DMA source address
	eduRegDMADst    nhi.Reg = 0x88 // DMA destination address
	eduRegDMACount  nhi.Reg = 0x90 // DMA transfer count, bytes
	eduRegDMACmd    nhi.Reg = 0x98 // DMA command

	eduID       = 0x010000ed // version 1.0
	eduDMARun   = 0x1        // EDU_DMA_RUN: start; cleared when done
	eduDMAToPCI = 0x2        // EDU_DMA_DIR: 1 = device buffer to RAM (EDU_DMA_TO_PCI)
	eduDMAIRQ   = 0x4        // EDU_DMA_IRQ: raise DMA_IRQ when done
	eduIRQDMA   = 0x100      // DMA_IRQ
	eduDMAStart = 0x40000    // DMA_START: the device buffer's address
	eduDMASize  = 4096       // DMA_SIZE
	// eduDMALen is the round trip's length: short of the buffer's end,
	// because qemu 7.2's edu_check_range takes a transfer that ends there
	// for out of bounds and stops the whole machine (hw_error); later
	// versions fixed the check and only log.
	eduDMALen     = eduDMASize - 64
	eduDMABits    = 28         // the default dma_mask, (1<<28)-1
	eduTestIRQBit = 0x40000000 // a status bit neither FACT_IRQ nor DMA_IRQ
)

// edu runs the checks on one opened edu device.
type edu struct {
	dev nhi.Device
	// wait bounds each wait for an interrupt: a hang guard, far above
	// edu's 100 ms DMA delay.
	wait time.Duration
	// faulted reports whether the IOMMU logged a DMA fault at iova,
	// waiting up to wait for it.
	faulted func(ctx context.Context, iova uint64) (string, error)
	buf     nhi.Memory // the round trip's buffer: pattern, then the copy back
	pattern []byte
}

// checkID reads the identification register.
func (e *edu) checkID(context.Context) (string, error) {
	if v := e.dev.Read32(eduRegID); v != eduID {
		return "", fmt.Errorf("BAR0[0x00] = %#08x, want %#08x (edu 1.0)", v, eduID)
	}
	return fmt.Sprintf("BAR0[0x00] = %#08x through the mmapped BAR0", eduID), nil
}

// checkLiveness writes values to the liveness register and reads their
// complement back.
func (e *edu) checkLiveness(context.Context) (string, error) {
	for _, v := range []uint32{0x12345678, 0, rand.Uint32()} {
		e.dev.Write32(eduRegLiveness, v)
		if got := e.dev.Read32(eduRegLiveness); got != ^v {
			return "", fmt.Errorf("wrote %#08x to BAR0[0x04], read %#08x, want %#08x", v, got, ^v)
		}
	}
	return "BAR0[0x04] read back the complement of 3 written values", nil
}

func (e *edu) vector() (<-chan struct{}, error) {
	v := e.dev.Vectors()
	if len(v) != 1 {
		return nil, fmt.Errorf("%d interrupt vectors, want edu's 1 MSI vector", len(v))
	}
	return v[0], nil
}

// interrupt waits for the vector, then checks that the status register
// holds want and acknowledges it.
func (e *edu) interrupt(ctx context.Context, what string, want uint32) error {
	v, err := e.vector()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, e.wait)
	defer cancel()
	select {
	case <-v:
	case <-ctx.Done():
		return fmt.Errorf("no interrupt on the eventfd %v after %s (interrupt status %#x, DMA command %#x)",
			e.wait, what, e.dev.Read32(eduRegIRQStatus), e.dev.Read32(eduRegDMACmd))
	}
	if st := e.dev.Read32(eduRegIRQStatus); st != want {
		return fmt.Errorf("interrupt after %s with status %#x, want %#x", what, st, want)
	}
	e.dev.Write32(eduRegIRQAck, want)
	if st := e.dev.Read32(eduRegIRQStatus); st != 0 {
		return fmt.Errorf("interrupt status %#x after acknowledging %#x", st, want)
	}
	return nil
}

// quiet clears the interrupt status and fails if an interrupt is pending:
// the next one must come from what the check does.
func (e *edu) quiet() error {
	v, err := e.vector()
	if err != nil {
		return err
	}
	e.dev.Write32(eduRegIRQAck, 0xffffffff)
	select {
	case <-v:
		return fmt.Errorf("an interrupt was pending before the check (status now %#x)", e.dev.Read32(eduRegIRQStatus))
	default:
		return nil
	}
}

// checkMSI raises an interrupt through the raise register and receives it
// on the eventfd.
func (e *edu) checkMSI(ctx context.Context) (string, error) {
	if err := e.quiet(); err != nil {
		return "", err
	}
	e.dev.Write32(eduRegIRQRaise, eduTestIRQBit)
	if err := e.interrupt(ctx, "raising it by BAR0[0x60]", eduTestIRQBit); err != nil {
		return "", err
	}
	return fmt.Sprintf("BAR0[0x60] = %#x arrived as MSI on the eventfd; status read and acknowledged", eduTestIRQBit), nil
}

// dma runs one transfer and waits for its completion interrupt.
func (e *edu) dma(ctx context.Context, what string, src, dst uint64, n int, dir uint32) error {
	if err := e.quiet(); err != nil {
		return err
	}
	if src>>32 != 0 || dst>>32 != 0 {
		return fmt.Errorf("DMA %#x -> %#x: edu takes these as 32-bit writes here", src, dst)
	}
	e.dev.Write32(eduRegDMASrc, uint32(src))
	e.dev.Write32(eduRegDMADst, uint32(dst))
	e.dev.Write32(eduRegDMACount, uint32(n))
	e.dev.Write32(eduRegDMACmd, eduDMARun|eduDMAIRQ|dir)
	if err := e.interrupt(ctx, what, eduIRQDMA); err != nil {
		return err
	}
	if cmd := e.dev.Read32(eduRegDMACmd); cmd&eduDMARun != 0 {
		return fmt.Errorf("DMA command %#x still running after its interrupt", cmd)
	}
	return nil
}

// checkDMAToDevice copies a random page from DMA memory into the device.
func (e *edu) checkDMAToDevice(ctx context.Context) (string, error) {
	m, err := e.dev.AllocDMA(2 * eduDMASize)
	if err != nil {
		return "", err
	}
	e.buf = m
	b := m.Bytes()
	if len(b) < 2*eduDMASize || m.IOVA()+uint64(len(b)) > 1<<eduDMABits {
		return "", fmt.Errorf("DMA buffer of %d bytes at IOVA %#x: want %d bytes below the edu's 28-bit mask", len(b), m.IOVA(), 2*eduDMASize)
	}
	if !bytes.Equal(b, make([]byte, len(b))) {
		return "", errors.New("new DMA memory is not zeroed")
	}
	e.pattern = make([]byte, eduDMALen)
	for i := range e.pattern {
		e.pattern[i] = byte(rand.Uint32())
	}
	copy(b, e.pattern)
	if err := e.dma(ctx, "the RAM-to-device DMA", m.IOVA(), eduDMAStart, eduDMALen, 0); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d random bytes from IOVA %#x into the device buffer, completion MSI received", eduDMALen, m.IOVA()), nil
}

// checkDMAFromDevice copies the device buffer back into the second page
// and compares it with what went in.
func (e *edu) checkDMAFromDevice(ctx context.Context) (string, error) {
	if e.buf == nil {
		return "", errors.New("no data in the device: the RAM-to-device DMA did not run")
	}
	b := e.buf.Bytes()
	back, rest := b[eduDMASize:eduDMASize+eduDMALen], b[eduDMASize+eduDMALen:2*eduDMASize]
	dst := e.buf.IOVA() + eduDMASize
	if err := e.dma(ctx, "the device-to-RAM DMA", eduDMAStart, dst, eduDMALen, eduDMAToPCI); err != nil {
		return "", err
	}
	if !bytes.Equal(back, e.pattern) {
		i := 0
		for i < len(back) && back[i] == e.pattern[i] {
			i++
		}
		return "", fmt.Errorf("bytes copied back to IOVA %#x differ from the %d sent, first at offset %d (%#02x, want %#02x)",
			dst, len(back), i, back[i], e.pattern[i])
	}
	if !bytes.Equal(b[:eduDMALen], e.pattern) {
		return "", errors.New("the source page changed")
	}
	if !bytes.Equal(rest, make([]byte, len(rest))) {
		return "", fmt.Errorf("the device wrote past the %d bytes asked for", eduDMALen)
	}
	return fmt.Sprintf("the device buffer back to IOVA %#x: %d bytes identical, none beyond, completion MSI received", dst, eduDMALen), nil
}

// checkIOMMUFault unmaps a buffer and has the device write to its IOVA:
// the IOMMU must refuse and log the fault.
func (e *edu) checkIOMMUFault(ctx context.Context) (string, error) {
	m, err := e.dev.AllocDMA(eduDMASize)
	if err != nil {
		return "", err
	}
	iova := m.IOVA()
	if err := m.Free(); err != nil {
		return "", fmt.Errorf("free: %w", err)
	}
	if err := e.dma(ctx, "a DMA to an unmapped IOVA", eduDMAStart, iova, 64, eduDMAToPCI); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, e.wait)
	defer cancel()
	line, err := e.faulted(ctx, iova)
	if err != nil {
		return "", fmt.Errorf("device write to unmapped IOVA %#x: %w", iova, err)
	}
	return fmt.Sprintf("device write to the unmapped IOVA %#x refused: %s", iova, line), nil
}
