package sysfs

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// twoHosts is host2's view of host1 as the README's walkthrough has it:
// host1 at route 1, with its stream service bound.
func twoHosts() State {
	return State{
		Domain:   0,
		Security: "nopcie",
		Router: Router{
			VendorID: 0x8086, DeviceID: 0x7eb5, VendorName: "Intel Corp.", DeviceName: "host2",
			UUID:       [16]byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
			Generation: 4, USB4Version: "1.0",
		},
		XDomains: []XDomain{{
			Route: 1, VendorID: 0x8086, DeviceID: 0x1, VendorName: "Intel Corp.", DeviceName: "host1",
			UUID:     [16]byte{0x6f, 0x1e, 0x2d, 0x3c, 0xaa, 0xbb, 0xcc, 0xdd, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
			MaxHopID: 19,
			Link:     Link{RxSpeed: 20, TxSpeed: 20, RxLanes: 1, TxLanes: 1},
			Services: []Service{{Index: 0, Key: "stream", PrtcID: 1, PrtcVers: 1, PrtcRevs: 0, PrtcStns: 0, Bound: true}},
		}},
		Refcnt: 2,
	}
}

// TestFilesAsLinuxPrintsThem checks every file and link of the view against
// the text Linux's show functions print, each row naming its printf.
func TestFilesAsLinuxPrintsThem(t *testing.T) {
	const dev = "bus/thunderbolt/devices/"
	tests := []struct {
		path, want, linux string
	}{
		{"bus/thunderbolt/drivers_autoprobe", "1\n", "bus.c drivers_autoprobe_show %d\\n"},
		{dev + "domain0/security", "nopcie\n", "domain.c security_show %s\\n of tb_security_names"},
		{dev + "domain0/deauthorization", "0\n", "domain.c deauthorization_show %d\\n: 1 only with user/secure"},
		{dev + "domain0/iommu_dma_protection", "0\n", "domain.c iommu_dma_protection_show %d\\n"},
		{dev + "domain0/uevent", "DEVTYPE=thunderbolt_domain\n", "driver core DEVTYPE"},
		{dev + "0-0/device", "0x7eb5\n", "switch.c device_show %#x\\n"},
		{dev + "0-0/device_name", "host2\n", "switch.c device_name_show %s\\n"},
		{dev + "0-0/generation", "4\n", "switch.c generation_show %u\\n"},
		{dev + "0-0/unique_id", "01020304-0506-0708-8000-0000ffffffff\n", "switch.c unique_id_show %pUb\\n"},
		{dev + "0-0/vendor", "0x8086\n", "switch.c vendor_show %#x\\n"},
		{dev + "0-0/vendor_name", "Intel Corp.\n", "switch.c vendor_name_show %s\\n"},
		{dev + "0-0/uevent", "DEVTYPE=thunderbolt_device\nUSB4_TYPE=host\nUSB4_VERSION=1.0\n", "switch.c tb_switch_uevent"},
		{dev + "0-1/device", "0x1\n", "xdomain.c device_show %#x\\n"},
		{dev + "0-1/device_name", "host1\n", "xdomain.c device_name_show %s\\n"},
		{dev + "0-1/maxhopid", "19\n", "xdomain.c maxhopid_show %d\\n"},
		{dev + "0-1/rx_lanes", "1\n", "xdomain.c rx_lanes_show %u\\n"},
		{dev + "0-1/rx_speed", "20.0 Gb/s\n", "xdomain.c speed_show %u.0 Gb/s\\n"},
		{dev + "0-1/tx_lanes", "1\n", "xdomain.c tx_lanes_show %u\\n"},
		{dev + "0-1/tx_speed", "20.0 Gb/s\n", "xdomain.c speed_show %u.0 Gb/s\\n"},
		{dev + "0-1/unique_id", "6f1e2d3c-aabb-ccdd-8000-0000ffffffff\n", "xdomain.c unique_id_show %pUb\\n"},
		{dev + "0-1/vendor", "0x8086\n", "xdomain.c vendor_show %#x\\n"},
		{dev + "0-1/vendor_name", "Intel Corp.\n", "xdomain.c vendor_name_show %s\\n"},
		{dev + "0-1/uevent", "DEVTYPE=thunderbolt_xdomain\n", "no uevent callback: driver core only"},
		{dev + "0-1.0/key", "stream\n", "xdomain.c key_show %*pE\\n"},
		{dev + "0-1.0/modalias", "tbsvc:kstreamp00000001v00000001r00000000\n", "xdomain.c get_modalias tbsvc:k%sp%08Xv%08Xr%08X"},
		{dev + "0-1.0/prtcid", "1\n", "xdomain.c prtcid_show %u\\n"},
		{dev + "0-1.0/prtcvers", "1\n", "xdomain.c prtcvers_show %u\\n"},
		{dev + "0-1.0/prtcrevs", "0\n", "xdomain.c prtcrevs_show %u\\n"},
		{dev + "0-1.0/prtcstns", "0x00000000\n", "xdomain.c prtcstns_show 0x%08x\\n"},
		{dev + "0-1.0/uevent", "DEVTYPE=thunderbolt_service\nDRIVER=thunderbolt_stream\nMODALIAS=tbsvc:kstreamp00000001v00000001r00000000\n", "driver core, then tb_service_uevent"},
		{dev + "0-1.0/driver", "-> ../../drivers/thunderbolt_stream", "driver core link"},
		{"bus/thunderbolt/drivers/thunderbolt_stream/0-1.0", "-> ../../devices/0-1.0", "driver core link"},
		{"bus/thunderbolt/drivers/thunderbolt_stream/module", "-> ../../../../module/thunderbolt_stream", "module_add_driver"},
		{"module/thunderbolt_stream/initstate", "live\n", "module.c show_initstate"},
		{"module/thunderbolt_stream/refcnt", "2\n", "module.c show_refcnt %i\\n"},
		{"module/thunderbolt_stream/taint", "\n", "module.c show_taint: none"},
		{"module/thunderbolt_stream/drivers/thunderbolt:thunderbolt_stream", "-> ../../../bus/thunderbolt/drivers/thunderbolt_stream", "module_add_driver bus:driver"},
	}
	root := build(twoHosts())
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e := root.find(tt.path)
			require.NotNil(t, e, "missing (%s)", tt.linux)
			got := e.text
			if e.kind == kindSymlink {
				got = "-> " + got
			}
			require.Equal(t, tt.want, got, tt.linux)
		})
	}
}

// TestWhatIsHidden checks the files Linux does not create in this
// configuration.
func TestWhatIsHidden(t *testing.T) {
	const dev = "bus/thunderbolt/devices/"
	s := twoHosts()
	root := build(s)
	for _, p := range []string{
		dev + "domain0/boot_acl", // software CM: no boot ACL
		dev + "0-0/authorized",   // nopcie hides it
		dev + "0-0/boot",         // route 0
		dev + "0-0/rx_speed",     // route 0
		dev + "0-0/key",          // route 0
		"module/thunderbolt_stream/parameters",
	} {
		require.Nil(t, root.find(p), p)
	}
	s.Security = "user"
	s.Router.VendorName, s.Router.DeviceName = "", ""
	s.XDomains[0].Services[0].Bound = false
	root = build(s)
	require.Equal(t, "1\n", root.find(dev+"0-0/authorized").text)
	require.Equal(t, "1\n", root.find(dev+"domain0/deauthorization").text)
	require.Nil(t, root.find(dev+"0-0/vendor_name"))
	require.Nil(t, root.find(dev+"0-0/device_name"))
	require.Nil(t, root.find(dev+"0-1.0/driver"), "unbound: no driver link")
	require.Nil(t, root.find("bus/thunderbolt/drivers/thunderbolt_stream/0-1.0"))
	require.Equal(t, "DEVTYPE=thunderbolt_service\nMODALIAS=tbsvc:kstreamp00000001v00000001r00000000\n", root.find(dev+"0-1.0/uevent").text)
}

func TestFormats(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{hexAlt(0), "0\n"}, // %#x prints no 0x for zero
		{hexAlt(0x1d6b), "0x1d6b\n"},
		{escapeNP("str\x01\n\\"), `str\001\n\`}, // a backslash is printable: kept
		{Modalias(Service{Key: "network", PrtcID: 1, PrtcVers: 1, PrtcRevs: 0xabc}), "tbsvc:knetworkp00000001v00000001r00000ABC"},
		{speed(40), "40.0 Gb/s\n"},
		{routerName(1, 0x503), "1-503"},
		{serviceName("0-503", 2), "0-503.2"},
	} {
		require.Equal(t, tt.want, tt.got)
	}
}

// source is a Source whose state a test changes.
type source struct {
	mu sync.Mutex
	s  State
}

func (s *source) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s
}

func (s *source) set(st State) {
	s.mu.Lock()
	s.s = st
	s.mu.Unlock()
}

// TestMountFollowsTheState mounts the view (root, /dev/fuse) and reads it
// as a program would; an unplug (no XDomain) removes the XDomain and
// service directories at once, a re-plug brings them back.
func TestMountFollowsTheState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount(2) of a FUSE file system")
	}
	src := &source{s: twoHosts()}
	dir := t.TempDir()
	srv, err := Mount(t.Context(), dir, src, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Unmount()) })

	keys, err := filepath.Glob(filepath.Join(dir, "bus/thunderbolt/devices/*/key"))
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, "bus/thunderbolt/devices/0-1.0/key")}, keys)
	b, err := os.ReadFile(keys[0])
	require.NoError(t, err)
	require.Equal(t, "stream\n", string(b))
	target, err := filepath.EvalSymlinks(filepath.Join(dir, "bus/thunderbolt/devices/0-1.0/driver"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "bus/thunderbolt/drivers/thunderbolt_stream"), target)
	target, err = filepath.EvalSymlinks(filepath.Join(dir, "bus/thunderbolt/drivers/thunderbolt_stream/module"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "module/thunderbolt_stream"), target)
	_, err = os.OpenFile(filepath.Join(dir, "bus/thunderbolt/devices/0-1/vendor"), os.O_WRONLY, 0)
	require.ErrorIs(t, err, os.ErrPermission, "read-only attribute")
	_, err = os.ReadFile(filepath.Join(dir, "bus/thunderbolt/drivers/thunderbolt_stream/bind"))
	require.ErrorIs(t, err, os.ErrPermission, "write-only attribute")

	devices := func() []string {
		entries, err := os.ReadDir(filepath.Join(dir, "bus/thunderbolt/devices"))
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		return names
	}
	require.Equal(t, []string{"0-0", "0-1", "0-1.0", "domain0"}, devices())

	unplugged := twoHosts()
	unplugged.XDomains = nil
	src.set(unplugged)
	require.Equal(t, []string{"0-0", "domain0"}, devices())
	_, err = os.Stat(filepath.Join(dir, "bus/thunderbolt/devices/0-1.0/key"))
	require.ErrorIs(t, err, os.ErrNotExist)

	src.set(twoHosts())
	b, err = os.ReadFile(filepath.Join(dir, "bus/thunderbolt/devices/0-1.0/modalias"))
	require.NoError(t, err)
	require.Equal(t, "tbsvc:kstreamp00000001v00000001r00000000\n", string(b))
	require.True(t, strings.HasSuffix(devices()[2], ".0"))
}

func TestAttributes(t *testing.T) {
	a := Attributes(twoHosts())
	require.Equal(t, "20.0 Gb/s", a["bus/thunderbolt/devices/0-1"]["rx_speed"])
	require.Equal(t, "../../drivers/thunderbolt_stream", a["bus/thunderbolt/devices/0-1.0"]["driver"])
	require.Equal(t, "DEVTYPE=thunderbolt_domain", a["bus/thunderbolt/devices/domain0"]["uevent"])
	require.Equal(t, "2", a["module/thunderbolt_stream"]["refcnt"])
	_, ok := a["bus/thunderbolt/drivers/thunderbolt_stream"]["bind"]
	require.False(t, ok, "write-only files have nothing to show")
}
