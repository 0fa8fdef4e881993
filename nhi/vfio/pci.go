package vfio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Address is a PCI function address, domain:bus:device.function.
type Address struct {
	Domain   uint16
	Bus      uint8
	Device   uint8 // 0..31
	Function uint8 // 0..7
}

// ErrAddress is returned for a malformed PCI address.
var ErrAddress = errors.New("vfio: bad PCI address")

// ParseAddress parses "0000:00:0d.2" or, with domain 0, "00:0d.2".
func ParseAddress(s string) (Address, error) {
	var a Address
	rest := s
	if len(s) == len("0000:00:00.0") {
		d, err := strconv.ParseUint(s[:4], 16, 16)
		if err != nil || s[4] != ':' {
			return a, fmt.Errorf("%q: %w", s, ErrAddress)
		}
		a.Domain, rest = uint16(d), s[5:]
	}
	if len(rest) != len("00:00.0") || rest[2] != ':' || rest[5] != '.' {
		return a, fmt.Errorf("%q: %w", s, ErrAddress)
	}
	bus, err1 := strconv.ParseUint(rest[:2], 16, 8)
	dev, err2 := strconv.ParseUint(rest[3:5], 16, 8)
	fn, err3 := strconv.ParseUint(rest[6:], 8, 8)
	if err1 != nil || err2 != nil || err3 != nil || dev > 31 || fn > 7 {
		return a, fmt.Errorf("%q: %w", s, ErrAddress)
	}
	a.Bus, a.Device, a.Function = uint8(bus), uint8(dev), uint8(fn)
	return a, nil
}

// String formats the address as sysfs names it.
func (a Address) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%d", a.Domain, a.Bus, a.Device, a.Function)
}

// ErrNoIOMMU is returned when DMA would not go through an IOMMU.
var ErrNoIOMMU = errors.New("vfio: no IOMMU")

// iommuGroup finds the IOMMU group of a device under sysfs root: the
// device must exist, IOMMU groups must exist, and the device must belong
// to one. It returns the group number.
func iommuGroup(sysfs string, a Address) (string, error) {
	dev := filepath.Join(sysfs, "bus/pci/devices", a.String())
	if _, err := os.Stat(dev); err != nil {
		return "", fmt.Errorf("vfio: PCI device %v: %w", a, err)
	}
	groups, err := os.ReadDir(filepath.Join(sysfs, "kernel/iommu_groups"))
	if err != nil || len(groups) == 0 {
		return "", fmt.Errorf("%w: %s has no IOMMU groups (enable the IOMMU: intel_iommu=on or amd_iommu=on)",
			ErrNoIOMMU, filepath.Join(sysfs, "kernel/iommu_groups"))
	}
	link, err := os.Readlink(filepath.Join(dev, "iommu_group"))
	if err != nil {
		return "", fmt.Errorf("%w: PCI device %v is in no IOMMU group", ErrNoIOMMU, a)
	}
	return filepath.Base(link), nil
}
