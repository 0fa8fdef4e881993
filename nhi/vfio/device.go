//go:build linux

package vfio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"tbstream/nhi"
)

// Options tune Open.
type Options struct {
	// Sysfs and DevVFIO are the sysfs mount and the VFIO device directory;
	// empty means /sys and /dev/vfio.
	Sysfs, DevVFIO string
	// Vectors is the number of interrupt vectors to enable, at most
	// nhi.MaxVectors and the device's count; 0 means as many as possible.
	Vectors int

	// The fields below point Open at a PCI device other than an NHI (the
	// VM suite drives qemu's edu test device with them). Their zero values
	// are what package nhi needs.

	// Interrupts is the interrupt type bound to eventfds: MSIX (the
	// default, the NHI's) or MSI.
	Interrupts Interrupts
	// IOVABase is the first IOVA AllocDMA hands out, page-aligned and not
	// zero; 0 means DefaultIOVABase.
	IOVABase uint64
	// DMABits is how many address bits the device drives: AllocDMA fails
	// rather than hand out an IOVA at or above 1<<DMABits. 0 means 64.
	DMABits int
}

// Interrupts is the kind of PCI interrupt Open binds to eventfds, each
// a VFIO IRQ index of its own (linux/vfio.h).
type Interrupts int

const (
	// MSIX is VFIO_PCI_MSIX_IRQ_INDEX: up to nhi.MaxVectors vectors, one
	// per ring interrupt, as a USB4 NHI has them. The default.
	MSIX Interrupts = iota
	// MSI is VFIO_PCI_MSI_IRQ_INDEX, plain MSI, for a device without
	// MSI-X. An NHI is not driven this way: package nhi assigns rings to
	// MSI-X vectors.
	MSI
)

func (i Interrupts) String() string {
	switch i {
	case MSIX:
		return "MSI-X"
	case MSI:
		return "MSI"
	}
	return fmt.Sprintf("Interrupts(%d)", int(i))
}

// vfioIndex is the VFIO IRQ index of i.
func (i Interrupts) vfioIndex() uint32 {
	if i == MSI {
		return vfioPCIMSIIRQIndex
	}
	return vfioPCIMSIXIRQIndex
}

// DefaultIOVABase is the first IOVA handed out to an NHI: above the 32-bit
// space, clear of the MSI window x86 IOMMUs reserve below 4 GiB.
const DefaultIOVABase = 1 << 32

// Device is an NHI reached through VFIO. It implements nhi.Device.
type Device struct {
	addr      Address
	container int
	group     int
	device    int
	bar       []byte
	irq       Interrupts
	vectors   []chan struct{}
	eventfds  []*os.File
	wg        sync.WaitGroup
	closeOnce sync.Once

	// iovaLimit is the first IOVA the device cannot reach (0: none).
	iovaLimit uint64

	// mu protects nextIOVA and mappings.
	mu       sync.Mutex
	nextIOVA uint64
	mappings map[uint64]*memory
}

var _ nhi.Device = (*Device)(nil)

// Open takes the PCI function at addr ("0000:00:0d.2"), which must be
// bound to vfio-pci and isolated by an IOMMU.
func Open(addr string, opts Options) (*Device, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if opts.Sysfs == "" {
		opts.Sysfs = "/sys"
	}
	if opts.DevVFIO == "" {
		opts.DevVFIO = "/dev/vfio"
	}
	if opts.Vectors < 0 || opts.Vectors > nhi.MaxVectors {
		return nil, fmt.Errorf("vfio open %v: %d vectors outside 0..%d", a, opts.Vectors, nhi.MaxVectors)
	}
	if opts.Interrupts != MSIX && opts.Interrupts != MSI {
		return nil, fmt.Errorf("vfio open %v: unknown interrupt type %v", a, opts.Interrupts)
	}
	if opts.DMABits < 0 || opts.DMABits > 64 || (opts.DMABits > 0 && opts.DMABits <= 12) {
		return nil, fmt.Errorf("vfio open %v: %d DMA address bits outside 13..64", a, opts.DMABits)
	}
	if opts.IOVABase == 0 {
		opts.IOVABase = DefaultIOVABase
	}
	var limit uint64
	if opts.DMABits > 0 && opts.DMABits < 64 {
		limit = 1 << opts.DMABits
	}
	if opts.IOVABase%nhi.PageSize != 0 {
		return nil, fmt.Errorf("vfio open %v: IOVA base %#x not page-aligned", a, opts.IOVABase)
	}
	if limit != 0 && opts.IOVABase >= limit {
		return nil, fmt.Errorf("vfio open %v: IOVA base %#x beyond the %d-bit DMA limit", a, opts.IOVABase, opts.DMABits)
	}
	group, err := iommuGroup(opts.Sysfs, a)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(group, "noiommu") {
		return nil, fmt.Errorf("%w: %v is in a no-IOMMU VFIO group", ErrNoIOMMU, a)
	}
	d := &Device{addr: a, container: -1, group: -1, device: -1, irq: opts.Interrupts,
		nextIOVA: opts.IOVABase, iovaLimit: limit, mappings: map[uint64]*memory{}}
	if err := d.open(filepath.Join(opts.DevVFIO, "vfio"), filepath.Join(opts.DevVFIO, group), opts.Vectors); err != nil {
		d.Close()
		return nil, fmt.Errorf("vfio open %v: %w", a, err)
	}
	return d, nil
}

func (d *Device) open(containerPath, groupPath string, vectors int) error {
	var err error
	if d.container, err = unix.Open(containerPath, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open %s: %w", containerPath, err)
	}
	if v, err := ioctlValue(d.container, vfioGetAPIVersion, 0); err != nil || v != vfioAPIVersion {
		return fmt.Errorf("VFIO API version %d (%v), want %d", v, err, vfioAPIVersion)
	}
	iommuType := uintptr(vfioType1v2IOMMU)
	if ok, _ := ioctlValue(d.container, vfioCheckExtension, iommuType); ok <= 0 {
		iommuType = vfioType1IOMMU
		if ok, _ := ioctlValue(d.container, vfioCheckExtension, iommuType); ok <= 0 {
			return fmt.Errorf("%w: the VFIO container has no type-1 IOMMU", ErrNoIOMMU)
		}
	}
	if d.group, err = unix.Open(groupPath, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open %s: %w", groupPath, err)
	}
	st := groupStatus{argsz: sizeofGroupStatus}
	if _, err := ioctl(d.group, vfioGroupGetStatus, unsafe.Pointer(&st)); err != nil {
		return fmt.Errorf("VFIO_GROUP_GET_STATUS: %w", err)
	}
	if st.flags&vfioGroupFlagsViable == 0 {
		return fmt.Errorf("IOMMU group %s is not viable: bind every device of the group to vfio-pci", groupPath)
	}
	if _, err := ioctl(d.group, vfioGroupSetContainer, unsafe.Pointer(&d.container)); err != nil {
		return fmt.Errorf("VFIO_GROUP_SET_CONTAINER: %w", err)
	}
	if _, err := ioctlValue(d.container, vfioSetIOMMU, iommuType); err != nil {
		return fmt.Errorf("VFIO_SET_IOMMU: %w", err)
	}
	name, err := unix.BytePtrFromString(d.addr.String())
	if err != nil {
		return err
	}
	if d.device, err = ioctl(d.group, vfioGroupGetDeviceFD, unsafe.Pointer(name)); err != nil {
		return fmt.Errorf("VFIO_GROUP_GET_DEVICE_FD: %w", err)
	}
	info := deviceInfo{argsz: sizeofDeviceInfo}
	if _, err := ioctl(d.device, vfioDeviceGetInfo, unsafe.Pointer(&info)); err != nil {
		return fmt.Errorf("VFIO_DEVICE_GET_INFO: %w", err)
	}
	if info.numRegions <= vfioPCIConfigRegionIndex || info.numIRQs <= vfioPCIMSIXIRQIndex {
		return fmt.Errorf("device has %d regions and %d IRQ types: not a PCI device", info.numRegions, info.numIRQs)
	}
	if err := d.mapBAR0(); err != nil {
		return err
	}
	if err := d.enableBusMaster(); err != nil {
		return err
	}
	return d.enableIRQs(vectors)
}

func (d *Device) region(index uint32) (regionInfo, error) {
	r := regionInfo{argsz: sizeofRegionInfo, index: index}
	if _, err := ioctl(d.device, vfioDeviceGetRegionInfo, unsafe.Pointer(&r)); err != nil {
		return r, fmt.Errorf("VFIO_DEVICE_GET_REGION_INFO %d: %w", index, err)
	}
	return r, nil
}

func (d *Device) mapBAR0() error {
	r, err := d.region(vfioPCIBAR0RegionIndex)
	if err != nil {
		return err
	}
	const need = vfioRegionInfoFlagRead | vfioRegionInfoFlagWrite | vfioRegionInfoFlagMmap
	if r.flags&need != need || r.size < nhi.BAR0Size {
		return fmt.Errorf("BAR0: flags %#x size %#x: need read/write/mmap and %#x bytes", r.flags, r.size, nhi.BAR0Size)
	}
	d.bar, err = unix.Mmap(d.device, int64(r.offset), int(r.size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap BAR0: %w", err)
	}
	return nil
}

// enableBusMaster sets PCI_COMMAND memory and bus-master bits: without
// them the NHI cannot DMA.
func (d *Device) enableBusMaster() error {
	r, err := d.region(vfioPCIConfigRegionIndex)
	if err != nil {
		return err
	}
	var cmd [2]byte
	if _, err := unix.Pread(d.device, cmd[:], int64(r.offset)+pciCommand); err != nil {
		return fmt.Errorf("read PCI_COMMAND: %w", err)
	}
	cmd[0] |= pciCommandMemory | pciCommandMaster
	if _, err := unix.Pwrite(d.device, cmd[:], int64(r.offset)+pciCommand); err != nil {
		return fmt.Errorf("write PCI_COMMAND: %w", err)
	}
	return nil
}

// enableIRQs binds up to want vectors of d.irq's type to eventfds.
func (d *Device) enableIRQs(want int) error {
	info := irqInfo{argsz: sizeofIRQInfo, index: d.irq.vfioIndex()}
	if _, err := ioctl(d.device, vfioDeviceGetIRQInfo, unsafe.Pointer(&info)); err != nil {
		return fmt.Errorf("VFIO_DEVICE_GET_IRQ_INFO %v: %w", d.irq, err)
	}
	n := min(int(info.count), nhi.MaxVectors)
	if want > 0 {
		n = min(n, want)
	}
	if n == 0 {
		return fmt.Errorf("device has no %v vectors", d.irq)
	}
	fds := make([]int32, n)
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fmt.Errorf("eventfd: %w", err)
		}
		fds[i] = int32(fd)
		f := os.NewFile(uintptr(fd), fmt.Sprintf("%v vector %d", d.irq, i))
		c := make(chan struct{}, 1)
		d.eventfds = append(d.eventfds, f)
		d.vectors = append(d.vectors, c)
		d.wg.Add(1)
		go d.forward(f, c)
	}
	return setIRQEventFDs(d.device, d.irq, fds)
}

// forward turns eventfd counts into coalescing channel signals.
func (d *Device) forward(f *os.File, c chan struct{}) {
	defer d.wg.Done()
	var buf [8]byte
	for {
		if _, err := f.Read(buf[:]); err != nil {
			return
		}
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// Read32 implements nhi.Device.
func (d *Device) Read32(off nhi.Reg) uint32 {
	if int(off)+4 > len(d.bar) || off%4 != 0 {
		return 0xffffffff
	}
	return nhi.LoadLE32(d.bar, int(off))
}

// Write32 implements nhi.Device.
func (d *Device) Write32(off nhi.Reg, v uint32) {
	if int(off)+4 <= len(d.bar) && off%4 == 0 {
		nhi.StoreLE32(d.bar, int(off), v)
	}
}

// Vectors implements nhi.Device: the MSI-X vectors, or with Options.Interrupts
// MSI the MSI vectors.
func (d *Device) Vectors() []<-chan struct{} {
	out := make([]<-chan struct{}, len(d.vectors))
	for i, c := range d.vectors {
		out[i] = c
	}
	return out
}

// memory is DMA memory mapped into the IOMMU.
type memory struct {
	d    *Device
	mem  []byte
	iova uint64
	once sync.Once
}

func (m *memory) Bytes() []byte { return m.mem }
func (m *memory) IOVA() uint64  { return m.iova }

func (m *memory) Free() error {
	var err error
	m.once.Do(func() { err = m.d.unmap(m) })
	return err
}

// AllocDMA implements nhi.Device: anonymous shared memory, pinned and
// mapped into the IOMMU for device reads and writes.
func (d *Device) AllocDMA(size int) (nhi.Memory, error) {
	if size <= 0 || size > 1<<30 {
		return nil, fmt.Errorf("vfio alloc dma: size %d out of range", size)
	}
	size = (size + nhi.PageSize - 1) &^ (nhi.PageSize - 1)
	iova, err := d.reserveIOVA(size)
	if err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("vfio alloc dma: mmap %d bytes: %w", size, err)
	}
	m := dmaMap{argsz: sizeofDMAMap, flags: vfioDMAMapFlagRead | vfioDMAMapFlagWrite,
		vaddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), iova: iova, size: uint64(size)}
	if _, err := ioctl(d.container, vfioIOMMUMapDMA, unsafe.Pointer(&m)); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("vfio alloc dma: VFIO_IOMMU_MAP_DMA %d bytes: %w", size, err)
	}
	buf := &memory{d: d, mem: mem, iova: iova}
	d.mu.Lock()
	d.mappings[iova] = buf
	d.mu.Unlock()
	return buf, nil
}

// reserveIOVA hands out the IOVA for size bytes, leaving an unmapped page
// after them so an overrun faults in the IOMMU. IOVAs are not reused.
func (d *Device) reserveIOVA(size int) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	iova := d.nextIOVA
	end := iova + uint64(size)
	if end < iova || (d.iovaLimit != 0 && end > d.iovaLimit) {
		return 0, fmt.Errorf("vfio alloc dma: %d bytes at IOVA %#x pass the device's DMA limit %#x", size, iova, d.iovaLimit)
	}
	d.nextIOVA = end + nhi.PageSize
	return iova, nil
}

func (d *Device) unmap(m *memory) error {
	d.mu.Lock()
	delete(d.mappings, m.iova)
	d.mu.Unlock()
	u := dmaUnmap{argsz: sizeofDMAUnmap, iova: m.iova, size: uint64(len(m.mem))}
	_, err := ioctl(d.container, vfioIOMMUUnmapDMA, unsafe.Pointer(&u))
	if err != nil {
		err = fmt.Errorf("VFIO_IOMMU_UNMAP_DMA: %w", err)
	}
	return errors.Join(err, unix.Munmap(m.mem))
}

// Close disables the interrupts, unmaps DMA memory and BAR0 and closes the device,
// group and container, in reverse order of Open.
func (d *Device) Close() error {
	var errs []error
	d.closeOnce.Do(func() {
		if d.device >= 0 && len(d.eventfds) > 0 {
			errs = append(errs, setIRQEventFDs(d.device, d.irq, nil))
		}
		for _, f := range d.eventfds {
			f.Close()
		}
		d.wg.Wait()
		d.mu.Lock()
		var maps []*memory
		for _, m := range d.mappings {
			maps = append(maps, m)
		}
		d.mu.Unlock()
		for _, m := range maps {
			errs = append(errs, m.Free())
		}
		if d.bar != nil {
			errs = append(errs, unix.Munmap(d.bar))
		}
		for _, fd := range []int{d.device, d.group, d.container} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	})
	return errors.Join(errs...)
}
