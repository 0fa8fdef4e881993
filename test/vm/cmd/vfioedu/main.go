// Command vfioedu proves package nhi/vfio on a real kernel: it drives
// qemu's edu test device, bound to vfio-pci behind qemu's emulated Intel
// IOMMU, through vfio.Open and the nhi.Device it returns, the code the
// daemon uses for an NHI (test/vm/vfio.sh runs it in the VM suite):
//
//	vfioedu ADDR
//
// ADDR is the edu's PCI address (0000:00:04.0). It prints one line per
// check, "ok NAME: detail" or "bad NAME: reason", in this order:
//
//	vfio-edu-nhi-defaults   Open with the NHI's options refuses the edu (no MSI-X)
//	vfio-edu-open           container, group, type-1 IOMMU, device, BAR0 mmap, MSI eventfd
//	vfio-edu-id             the identification register through BAR0
//	vfio-edu-liveness       the register that reads back the complement
//	vfio-edu-msi            an interrupt raised by register arrives on the eventfd
//	vfio-edu-dma-to-device  DMA from AllocDMA memory at its IOVA into the device
//	vfio-edu-dma-from-device  and back into the same mapping; the bytes compared
//	vfio-edu-iommu-fault    a device write to an unmapped IOVA faults in the IOMMU
//	vfio-edu-close          Close succeeds and the device opens again
//
// The exit status is 1 if any check failed.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"tbstream/nhi/vfio"
)

// iovaBase is below edu's 28-bit DMA mask, away from zero.
const iovaBase = 16 << 20

// checkTimeout bounds one check; wait bounds one interrupt or log line.
const (
	checkTimeout = 2 * time.Minute
	wait         = 30 * time.Second
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vfioedu PCI-ADDRESS")
		os.Exit(2)
	}
	if !run(os.Stdout, os.Args[1]) {
		os.Exit(1)
	}
}

// eduOptions point nhi/vfio at the edu: one MSI vector (it has no MSI-X),
// IOVAs within its 28-bit DMA mask.
var eduOptions = vfio.Options{Interrupts: vfio.MSI, IOVABase: iovaBase, DMABits: eduDMABits}

type check struct {
	name string
	run  func(context.Context) (string, error)
}

// checks are the checks on an open device, in order.
func (e *edu) checks() []check {
	return []check{
		{"vfio-edu-id", e.checkID},
		{"vfio-edu-liveness", e.checkLiveness},
		{"vfio-edu-msi", e.checkMSI},
		{"vfio-edu-dma-to-device", e.checkDMAToDevice},
		{"vfio-edu-dma-from-device", e.checkDMAFromDevice},
		{"vfio-edu-iommu-fault", e.checkIOMMUFault},
	}
}

// run runs every check on the edu at addr and reports whether all passed.
func run(w io.Writer, addr string) bool {
	ok := true
	report := func(name, detail string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(w, "bad %s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		fmt.Fprintf(w, "ok %s: %s\n", name, detail)
	}

	// The NHI's defaults ask for MSI-X, which the edu lacks: Open must say so.
	if dev, err := vfio.Open(addr, vfio.Options{}); err == nil {
		dev.Close()
		report("vfio-edu-nhi-defaults", "", errors.New("Open with the NHI's defaults accepted a device without MSI-X"))
	} else if !strings.Contains(err.Error(), "no MSI-X vectors") {
		report("vfio-edu-nhi-defaults", "", fmt.Errorf("Open with the NHI's defaults: %w (want: no MSI-X vectors)", err))
	} else {
		report("vfio-edu-nhi-defaults", fmt.Sprintf("refused: %v", err), nil)
	}

	dev, err := vfio.Open(addr, eduOptions)
	e := &edu{wait: wait, faulted: kmsgFault}
	checks := e.checks()
	if err != nil {
		report("vfio-edu-open", "", err)
		for _, c := range checks {
			report(c.name, "", errors.New("not run: the device did not open"))
		}
		report("vfio-edu-close", "", errors.New("not run: the device did not open"))
		return false
	}
	e.dev = dev
	irq, err := kernelIRQ(addr)
	cmd, cerr := pciCommand(addr)
	if err == nil && cerr == nil && cmd&pciCommandMaster == 0 {
		cerr = fmt.Errorf("PCI_COMMAND %#04x: bus mastering off after Open", cmd)
	}
	report("vfio-edu-open", fmt.Sprintf("%s through a type-1 IOMMU container, BAR0 mmapped, PCI_COMMAND %#04x (bus master), %d MSI vector on an eventfd; /proc/interrupts: %s",
		addr, cmd, len(dev.Vectors()), irq), errors.Join(err, cerr))
	for _, c := range checks {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		detail, err := c.run(ctx)
		cancel()
		report(c.name, detail, err)
	}

	if err := dev.Close(); err != nil {
		report("vfio-edu-close", "", fmt.Errorf("close: %w", err))
		return ok
	}
	// A group and its container are exclusive: opening again works only
	// if Close released them.
	again, err := vfio.Open(addr, eduOptions)
	if err != nil {
		report("vfio-edu-close", "", fmt.Errorf("open after close: %w", err))
		return ok
	}
	id := again.Read32(eduRegID)
	err = again.Close()
	if err == nil && id != eduID {
		err = fmt.Errorf("after reopening, BAR0[0x00] = %#08x", id)
	}
	report("vfio-edu-close", "closed, reopened (id read again) and closed", err)
	return ok
}

// PCI_COMMAND (pci_regs.h).
const (
	pciCommandOffset = 0x04
	pciCommandMaster = 1 << 2
)

// pciCommand reads the device's PCI_COMMAND register through sysfs.
func pciCommand(addr string) (uint16, error) {
	b, err := os.ReadFile("/sys/bus/pci/devices/" + addr + "/config")
	if err != nil {
		return 0, err
	}
	if len(b) < pciCommandOffset+2 {
		return 0, fmt.Errorf("config space of %s: %d bytes", addr, len(b))
	}
	return uint16(b[pciCommandOffset]) | uint16(b[pciCommandOffset+1])<<8, nil
}

// kernelIRQ returns the /proc/interrupts line of the MSI interrupt
// vfio-pci requested for addr: proof that the eventfd is bound to MSI
// (vfio-pci names it vfio-msi[N], vfio-msix[N] or vfio-intx).
func kernelIRQ(addr string) (string, error) {
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, "vfio-msi[0]("+addr+")") {
			return strings.Join(strings.Fields(line), " "), nil
		}
	}
	return "", fmt.Errorf("no vfio-msi[0](%s) interrupt in /proc/interrupts", addr)
}

// kmsgFault waits for the kernel's IOMMU driver to log a DMA fault at
// iova ("DMAR: [DMA Write ...] Request device [00:04.0] fault addr 0x...").
func kmsgFault(ctx context.Context, iova uint64) (string, error) {
	want := fmt.Sprintf("fault addr %#x", iova)
	for {
		line, err := kmsgFind(want)
		if err != nil || line != "" {
			return line, err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no %q in the kernel log: %w", want, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kmsgFind returns the first kernel log message containing s, or "".
func kmsgFind(s string) (string, error) {
	// Not os.OpenFile: a non-blocking character device would be parked in
	// the poller instead of returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open /dev/kmsg: %w", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		// One read returns one record: "prio,seq,time,flags;message\n".
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN || (err == nil && n == 0):
			return "", nil
		case err == unix.EPIPE: // overwritten while reading: go on
			continue
		case err != nil:
			return "", fmt.Errorf("read /dev/kmsg: %w", err)
		}
		if _, msg, ok := strings.Cut(string(buf[:n]), ";"); ok && strings.Contains(msg, s) {
			msg, _, _ = strings.Cut(msg, "\n")
			return msg, nil
		}
	}
}
