//go:build usb

package usbhost

import (
	"strings"
	"testing"

	"github.com/google/gousb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu/usbcable"
)

func desc(class gousb.Class, eps ...gousb.EndpointDesc) *gousb.DeviceDesc {
	m := map[gousb.EndpointAddress]gousb.EndpointDesc{}
	for _, e := range eps {
		m[e.Address] = e
	}
	return &gousb.DeviceDesc{Configs: map[int]gousb.ConfigDesc{1: {Number: 1, Interfaces: []gousb.InterfaceDesc{{
		Number: 0, AltSettings: []gousb.InterfaceSetting{{Number: 0, Class: class, Endpoints: m}},
	}}}}}
}

var (
	bulkIn  = gousb.EndpointDesc{Address: 0x81, Number: 1, Direction: gousb.EndpointDirectionIn, MaxPacketSize: 512, TransferType: gousb.TransferTypeBulk}
	bulkOut = gousb.EndpointDesc{Address: 0x02, Number: 2, Direction: gousb.EndpointDirectionOut, MaxPacketSize: 512, TransferType: gousb.TransferTypeBulk}
	intrIn  = gousb.EndpointDesc{Address: 0x83, Number: 3, Direction: gousb.EndpointDirectionIn, MaxPacketSize: 64, TransferType: gousb.TransferTypeInterrupt}
)

func TestCableEndpoints(t *testing.T) {
	in, out, err := cableEndpoints(desc(gousb.ClassVendorSpec, bulkIn, bulkOut))
	require.NoError(t, err)
	assert.Equal(t, 1, in.Number)
	assert.Equal(t, 2, out.Number)
	// The right IDs but the wrong descriptors: refused, named.
	for name, d := range map[string]*gousb.DeviceDesc{
		"class":      desc(gousb.ClassMassStorage, bulkIn, bulkOut),
		"no OUT":     desc(gousb.ClassVendorSpec, bulkIn),
		"interrupt":  desc(gousb.ClassVendorSpec, bulkIn, bulkOut, intrIn),
		"no config1": {Configs: map[int]gousb.ConfigDesc{2: {}}},
		"no intf":    {Configs: map[int]gousb.ConfigDesc{1: {Number: 1}}},
	} {
		_, _, err := cableEndpoints(d)
		assert.ErrorIs(t, err, ErrDescriptors, name)
	}
}

func TestUdevRule(t *testing.T) {
	r := UdevRule(usbcable.DefaultID)
	assert.True(t, strings.Contains(r, `ATTR{idVendor}=="1d6b", ATTR{idProduct}=="0104"`), r)
}
