package daemon

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu/usbcable"
)

func TestFlagsUSBCable(t *testing.T) {
	dir := t.TempDir()
	o, err := ParseFlags("tbstreamd", []string{"-run-dir", dir, "-cable", "usb-gadget:dummy_udc.0", "-usb-id", "1209:0001"})
	require.NoError(t, err)
	require.NotNil(t, o.Cable)
	assert.Equal(t, USBCable{Gadget: true, UDC: "dummy_udc.0"}, *o.Cable)
	assert.Equal(t, usbcable.ID{Vendor: 0x1209, Product: 0x0001}, o.USBID)

	o, err = ParseFlags("tbstreamd", []string{"-run-dir", dir, "-cable", "usb-gadget"})
	require.NoError(t, err)
	assert.Equal(t, USBCable{Gadget: true}, *o.Cable)

	_, err = ParseFlags("tbstreamd", []string{"-run-dir", dir, "-cable", "usb:3.2"})
	if USBHostBuilt {
		require.NoError(t, err)
	} else {
		require.ErrorIs(t, err, errNoUSBHost, "a build without -tags usb says how to get the host side")
	}
	for _, bad := range [][]string{
		{"-cable", "serial"},
		{"-cable", "usb:xyz"},
		{"-cable", "usb-gadget", "-usb-id", "1d6b"},
		{"-cable", "usb-gadget", "-vfio", "0000:00:0d.2"},
	} {
		_, err := ParseFlags("tbstreamd", append([]string{"-run-dir", dir}, bad...))
		assert.Error(t, err, "%v", bad)
	}
}

func TestParseCable(t *testing.T) {
	c, err := ParseCable("usb")
	require.NoError(t, err)
	assert.Equal(t, USBCable{Device: usbcable.Selector{ID: usbcable.DefaultID}}, c)
	c, err = ParseCable("usb:1234:5678")
	require.NoError(t, err)
	assert.Equal(t, usbcable.ID{Vendor: 0x1234, Product: 0x5678}, c.Device.ID)
}
