//go:build linux

package vfio

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VFIO ioctls (linux/vfio.h): _IO(VFIO_TYPE ';', VFIO_BASE 100 + n).
const (
	vfioType uintptr = ';'
	vfioBase         = 100

	vfioGetAPIVersion        = vfioType<<8 | (vfioBase + 0)
	vfioCheckExtension       = vfioType<<8 | (vfioBase + 1)
	vfioSetIOMMU             = vfioType<<8 | (vfioBase + 2)
	vfioGroupGetStatus       = vfioType<<8 | (vfioBase + 3)
	vfioGroupSetContainer    = vfioType<<8 | (vfioBase + 4)
	vfioGroupUnsetContainer  = vfioType<<8 | (vfioBase + 5)
	vfioGroupGetDeviceFD     = vfioType<<8 | (vfioBase + 6)
	vfioDeviceGetInfo        = vfioType<<8 | (vfioBase + 7)
	vfioDeviceGetRegionInfo  = vfioType<<8 | (vfioBase + 8)
	vfioDeviceGetIRQInfo     = vfioType<<8 | (vfioBase + 9)
	vfioDeviceSetIRQs        = vfioType<<8 | (vfioBase + 10)
	vfioIOMMUMapDMA          = vfioType<<8 | (vfioBase + 13)
	vfioIOMMUUnmapDMA        = vfioType<<8 | (vfioBase + 14)
	vfioAPIVersion           = 0
	vfioType1IOMMU           = 1
	vfioType1v2IOMMU         = 3
	vfioGroupFlagsViable     = 1 << 0
	vfioRegionInfoFlagRead   = 1 << 0
	vfioRegionInfoFlagWrite  = 1 << 1
	vfioRegionInfoFlagMmap   = 1 << 2
	vfioIRQSetDataNone       = 1 << 0
	vfioIRQSetDataEventFD    = 1 << 2
	vfioIRQSetActionTrigger  = 1 << 5
	vfioDMAMapFlagRead       = 1 << 0
	vfioDMAMapFlagWrite      = 1 << 1
	vfioPCIBAR0RegionIndex   = 0
	vfioPCIConfigRegionIndex = 7
	vfioPCIMSIIRQIndex       = 1
	vfioPCIMSIXIRQIndex      = 2
)

// PCI config space (pci_regs.h).
const (
	pciCommand       = 0x04
	pciCommandMemory = 1 << 1
	pciCommandMaster = 1 << 2
)

// struct vfio_group_status
type groupStatus struct {
	argsz, flags uint32
}

// struct vfio_device_info, up to num_irqs (the kernel's minsz)
type deviceInfo struct {
	argsz, flags, numRegions, numIRQs uint32
}

// struct vfio_region_info
type regionInfo struct {
	argsz, flags, index, capOffset uint32
	size, offset                   uint64
}

// struct vfio_irq_info
type irqInfo struct {
	argsz, flags, index, count uint32
}

// struct vfio_irq_set, without its flexible data array
type irqSet struct {
	argsz, flags, index, start, count uint32
}

// struct vfio_iommu_type1_dma_map
type dmaMap struct {
	argsz, flags uint32
	vaddr, iova  uint64
	size         uint64
}

// struct vfio_iommu_type1_dma_unmap
type dmaUnmap struct {
	argsz, flags uint32
	iova, size   uint64
}

// Sizes of the C structs, pinned by a test.
const (
	sizeofGroupStatus = 8
	sizeofDeviceInfo  = 16
	sizeofRegionInfo  = 32
	sizeofIRQInfo     = 16
	sizeofIRQSet      = 20
	sizeofDMAMap      = 32
	sizeofDMAUnmap    = 24
)

func ioctl(fd int, req uintptr, arg unsafe.Pointer) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

func ioctlValue(fd int, req uintptr, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// setIRQEventFDs binds vectors 0..len(fds)-1 of irq to eventfds; no fds
// disables them.
func setIRQEventFDs(deviceFD int, irq Interrupts, fds []int32) error {
	buf := make([]byte, sizeofIRQSet+4*len(fds))
	set := (*irqSet)(unsafe.Pointer(&buf[0]))
	set.argsz = uint32(len(buf))
	set.index = irq.vfioIndex()
	set.count = uint32(len(fds))
	set.flags = vfioIRQSetActionTrigger | vfioIRQSetDataEventFD
	if len(fds) == 0 {
		set.flags = vfioIRQSetActionTrigger | vfioIRQSetDataNone
	}
	for i, fd := range fds {
		*(*int32)(unsafe.Pointer(&buf[sizeofIRQSet+4*i])) = fd
	}
	if _, err := ioctl(deviceFD, vfioDeviceSetIRQs, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("VFIO_DEVICE_SET_IRQS (%d %v vectors): %w", len(fds), irq, err)
	}
	return nil
}
