//go:build linux

package vfio

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
)

// TestMain fails the package when a test leaks file descriptors.
func TestMain(m *testing.M) {
	// The runtime's poller keeps two descriptors once first used.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := openFDs()
	code := m.Run()
	if after := openFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "vfio tests leaked %d file descriptors\n", after-before)
		code = 1
	}
	os.Exit(code)
}

func openFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address
		ok   bool
	}{
		{"0000:00:0d.2", Address{0, 0, 0x0d, 2}, true},
		{"00:0d.2", Address{0, 0, 0x0d, 2}, true},
		{"abcd:ef:1f.7", Address{0xabcd, 0xef, 0x1f, 7}, true},
		{"0000:00:20.0", Address{}, false}, // device > 31
		{"0000:00:0d.8", Address{}, false}, // function > 7
		{"0000:00:0d", Address{}, false},
		{"0000-00:0d.2", Address{}, false},
		{"zz:0d.2", Address{}, false},
		{"", Address{}, false},
	} {
		got, err := ParseAddress(tc.in)
		if !tc.ok {
			require.ErrorIs(t, err, ErrAddress, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got)
		require.Len(t, got.String(), len("0000:00:00.0"))
	}
}

// TestStructSizes pins the Go mirrors of linux/vfio.h structs to the C sizes.
func TestStructSizes(t *testing.T) {
	for _, tc := range []struct {
		c    string
		got  uintptr
		want int
	}{
		{"struct vfio_group_status", unsafe.Sizeof(groupStatus{}), sizeofGroupStatus},
		{"struct vfio_device_info (to num_irqs)", unsafe.Sizeof(deviceInfo{}), sizeofDeviceInfo},
		{"struct vfio_region_info", unsafe.Sizeof(regionInfo{}), sizeofRegionInfo},
		{"struct vfio_irq_info", unsafe.Sizeof(irqInfo{}), sizeofIRQInfo},
		{"struct vfio_irq_set (header)", unsafe.Sizeof(irqSet{}), sizeofIRQSet},
		{"struct vfio_iommu_type1_dma_map", unsafe.Sizeof(dmaMap{}), sizeofDMAMap},
		{"struct vfio_iommu_type1_dma_unmap", unsafe.Sizeof(dmaUnmap{}), sizeofDMAUnmap},
	} {
		require.Equal(t, tc.want, int(tc.got), tc.c)
	}
	// _IO(';', 100 + n)
	require.Equal(t, uintptr(0x3b64), vfioGetAPIVersion)
	require.Equal(t, uintptr(0x3b6a), vfioGroupGetDeviceFD)
	require.Equal(t, uintptr(0x3b6e), vfioDeviceSetIRQs)
	require.Equal(t, uintptr(0x3b71), vfioIOMMUMapDMA)
	require.Equal(t, uintptr(0x3b72), vfioIOMMUUnmapDMA)
}

// fakeSysfs builds a sysfs tree with one PCI device.
func fakeSysfs(t *testing.T, groups []string, deviceGroup string) string {
	root := t.TempDir()
	dev := filepath.Join(root, "bus/pci/devices/0000:00:0d.2")
	require.NoError(t, os.MkdirAll(dev, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "kernel/iommu_groups"), 0o755))
	for _, g := range groups {
		require.NoError(t, os.MkdirAll(filepath.Join(root, "kernel/iommu_groups", g), 0o755))
	}
	if deviceGroup != "" {
		require.NoError(t, os.Symlink("../../../../kernel/iommu_groups/"+deviceGroup, filepath.Join(dev, "iommu_group")))
	}
	return root
}

func TestOpenRefusesWithoutIOMMU(t *testing.T) {
	for _, tc := range []struct {
		name        string
		groups      []string
		deviceGroup string
	}{
		{"no IOMMU groups", nil, ""},
		{"device in no group", []string{"3", "4"}, ""},
		{"no-IOMMU group", []string{"noiommu-0"}, "noiommu-0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sysfs := fakeSysfs(t, tc.groups, tc.deviceGroup)
			_, err := Open("0000:00:0d.2", Options{Sysfs: sysfs, DevVFIO: t.TempDir()})
			require.ErrorIs(t, err, ErrNoIOMMU)
		})
	}
	// With an IOMMU group, Open goes on to the VFIO nodes (absent here).
	sysfs := fakeSysfs(t, []string{"7"}, "7")
	_, err := Open("0000:00:0d.2", Options{Sysfs: sysfs, DevVFIO: t.TempDir()})
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNoIOMMU)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestOpenValidatesArguments(t *testing.T) {
	_, err := Open("not-an-address", Options{})
	require.ErrorIs(t, err, ErrAddress)
	_, err = Open("0000:00:0d.2", Options{Sysfs: fakeSysfs(t, []string{"1"}, "1"), Vectors: nhi.MaxVectors + 1})
	require.Error(t, err)
	_, err = Open("0000:7f:1f.7", Options{Sysfs: t.TempDir()})
	require.ErrorIs(t, err, os.ErrNotExist, "no such PCI device")
}

// TestOpenOnThisMachine: on a machine without IOMMU groups, a real PCI
// device is refused with ErrNoIOMMU.
func TestOpenOnThisMachine(t *testing.T) {
	if groups, _ := os.ReadDir("/sys/kernel/iommu_groups"); len(groups) > 0 {
		t.Skip("this machine has IOMMU groups; the refusal is covered with a fake sysfs")
	}
	devs, _ := os.ReadDir("/sys/bus/pci/devices")
	if len(devs) == 0 {
		t.Skip("no PCI devices in /sys/bus/pci/devices (container without sysfs PCI)")
	}
	_, err := Open(devs[0].Name(), Options{})
	require.ErrorIs(t, err, ErrNoIOMMU)
	require.Contains(t, err.Error(), "intel_iommu=on")
}

// TestHardware probes a real NHI bound to vfio-pci.
func TestHardware(t *testing.T) {
	addr := os.Getenv("TBSTREAM_VFIO_DEVICE")
	if addr == "" {
		t.Skip("needs a USB4 NHI bound to vfio-pci: set TBSTREAM_VFIO_DEVICE=0000:00:0d.2")
	}
	dev, err := Open(addr, Options{})
	require.NoError(t, err)
	n, err := nhi.Probe(dev, nhi.Options{})
	require.NoError(t, err)
	defer n.Close()
	require.Positive(t, n.HopCount())
	r, err := n.AllocRxRing(nhi.RingConfig{Hop: -1, Size: 32, Flags: nhi.RingFrame})
	require.NoError(t, err)
	require.NoError(t, r.Start())
	require.Zero(t, r.RxReady())
	r.Free()
}

func TestOpenValidatesDeviceOptions(t *testing.T) {
	sysfs := fakeSysfs(t, []string{"7"}, "7")
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"unknown interrupt type", Options{Interrupts: MSI + 1}},
		{"negative DMA bits", Options{DMABits: -1}},
		{"too few DMA bits", Options{DMABits: 12}},
		{"too many DMA bits", Options{DMABits: 65}},
		{"IOVA base not page-aligned", Options{IOVABase: 0x1000800}},
		{"default IOVA base beyond the DMA limit", Options{DMABits: 28}},
		{"IOVA base beyond the DMA limit", Options{DMABits: 28, IOVABase: 1 << 28}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Sysfs, tc.opts.DevVFIO = sysfs, t.TempDir()
			_, err := Open("0000:00:0d.2", tc.opts)
			require.Error(t, err)
			require.NotErrorIs(t, err, os.ErrNotExist, "refused before the VFIO nodes")
		})
	}
	// Valid settings go on to the (absent) VFIO nodes.
	for _, opts := range []Options{{}, {Interrupts: MSI, DMABits: 28, IOVABase: 1 << 24}, {DMABits: 64}} {
		opts.Sysfs, opts.DevVFIO = sysfs, t.TempDir()
		_, err := Open("0000:00:0d.2", opts)
		require.ErrorIs(t, err, os.ErrNotExist, "%+v", opts)
	}
}

// TestInterruptIndexes pins the VFIO IRQ indexes (enum order in
// linux/vfio.h: INTX, MSI, MSIX, ERR, REQ) and that the default is MSI-X.
func TestInterruptIndexes(t *testing.T) {
	var zero Options
	require.Equal(t, MSIX, zero.Interrupts)
	require.Equal(t, uint32(2), MSIX.vfioIndex())
	require.Equal(t, uint32(1), MSI.vfioIndex())
	require.Equal(t, "MSI-X", MSIX.String())
	require.Equal(t, "MSI", MSI.String())
}

func TestReserveIOVA(t *testing.T) {
	d := &Device{nextIOVA: 1 << 24, iovaLimit: 1 << 28}
	a, err := d.reserveIOVA(2 * nhi.PageSize)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<24), a)
	b, err := d.reserveIOVA(nhi.PageSize)
	require.NoError(t, err)
	require.Equal(t, a+3*nhi.PageSize, b, "one unmapped guard page between buffers")
	// The last buffer may end exactly at the limit, not beyond it.
	d.nextIOVA = 1<<28 - nhi.PageSize
	_, err = d.reserveIOVA(2 * nhi.PageSize)
	require.ErrorContains(t, err, "DMA limit")
	c, err := d.reserveIOVA(nhi.PageSize)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<28-nhi.PageSize), c)
	// Without a limit only wrap-around is refused.
	d = &Device{nextIOVA: 1<<64 - nhi.PageSize}
	_, err = d.reserveIOVA(2 * nhi.PageSize)
	require.Error(t, err)
}
