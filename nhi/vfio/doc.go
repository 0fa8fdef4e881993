// Package vfio is the real-hardware backend of package nhi: an nhi.Device
// over Linux VFIO. It opens the PCI function's IOMMU group and a type-1
// IOMMU container, maps BAR0 for 32-bit register access, allocates DMA
// memory (anonymous shared mappings mapped into the IOMMU at IOVAs it
// hands out), and delivers MSI-X vectors through eventfds.
//
// It refuses to run without an IOMMU: no IOMMU groups, no group for the
// device, a no-IOMMU group or a container without type-1 support all fail
// Open with ErrNoIOMMU, because without translation the NHI could DMA
// anywhere in memory.
//
// It knows nothing of rings or packets; package nhi drives the device.
//
// Options.Interrupts (MSI instead of MSI-X), IOVABase and DMABits point
// it at another PCI device: the VM suite (test/vm/vfio.sh) proves this
// code on a real kernel with qemu's edu test device behind an emulated
// IOMMU. Their zero values are the NHI's.
//
// Set-up, as root: bind the NHI to vfio-pci (echo vfio-pci >
// /sys/bus/pci/devices/ADDR/driver_override, then bind), make sure the
// IOMMU is on (intel_iommu=on or amd_iommu=on), then Open("0000:00:0d.2").
package vfio
