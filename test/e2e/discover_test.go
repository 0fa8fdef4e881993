//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu"
)

// Programs written for the kernel driver discover before they
// configure. These tests run such a program (discover.sh) and the same
// discovery from Go inside `tbstream shell`, and check the sysfs view
// against `tbstream list -json` and across an unplug.

// TestDiscoverScript runs discover.sh on both hosts: modprobe, discovery by
// key, the XDomain's identity, ring_size and throttling before the HopIDs,
// index to device, every attribute, then 64 MiB checked by sha256.
func TestDiscoverScript(t *testing.T) {
	needHosts(t)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	must(t, "host1", "head -c 67108864 /dev/urandom > "+in)
	script, err := filepath.Abs("discover.sh")
	require.NoError(t, err)
	recv := start("host2", "bash "+script+" recv disc "+out)
	sent := must(t, "host1", "bash "+script+" send disc "+in)
	received, err := recv()
	require.NoError(t, err, received)
	for _, o := range []string{sent, received} {
		require.Contains(t, o, "service 0-", o)
		require.Contains(t, o, "link: rx 1 x 20.0 Gb/s, tx 1 x 20.0 Gb/s", o)
		require.Contains(t, o, "/disc/ring_size=128\n", o, "ring_size written before the HopIDs")
		require.Contains(t, o, "/disc/throttling=4096\n", o)
	}
	require.Contains(t, sent, "peer: Intel Corp. host2 ")
	require.Contains(t, received, "peer: Intel Corp. host1 ")
	sum := strings.Fields(must(t, "host1", "sha256sum "+in))[0]
	require.Contains(t, sent, "sent "+sum+"\n")
	require.Contains(t, received, "received "+sum+"\n", "what host2 read is what host1 wrote")
	for _, h := range []string{"host1", "host2"} {
		require.Equal(t, "", must(t, h, "ls "+root), "%s: discover.sh removed its stream", h)
	}
}

// discoverEnv makes the test binary, run inside `tbstream shell`, print
// what discoverHelper finds instead of running tests.
const discoverEnv = "TBSTREAM_E2E_DISCOVER"

// discoverHelper is the discovery a Go program written for the kernel
// does: find the stream service by key and driver, then read every file
// and link under /sys/bus/thunderbolt and /sys/module/thunderbolt_stream.
// It prints {"service": NAME, "sysfs": {dir: {file: text}}}, with the
// directories relative to /sys and each text less its final newline, as
// `tbstream list -json` shows them.
func discoverHelper(w io.Writer) int {
	found, err := discover()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(w).Encode(found); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type discovered struct {
	Service string                       `json:"service"`
	Sysfs   map[string]map[string]string `json:"sysfs"`
}

func discover() (discovered, error) {
	var d discovered
	keys, err := filepath.Glob("/sys/bus/thunderbolt/devices/*/key")
	if err != nil {
		return d, err
	}
	for _, k := range keys {
		b, err := os.ReadFile(k)
		if err != nil {
			return d, err
		}
		drv, err := os.Readlink(filepath.Join(filepath.Dir(k), "driver"))
		if string(b) == "stream\n" && err == nil && filepath.Base(drv) == "thunderbolt_stream" {
			d.Service = filepath.Base(filepath.Dir(k))
			break
		}
	}
	if d.Service == "" {
		return d, fmt.Errorf("no stream service bound to thunderbolt_stream among %v", keys)
	}
	d.Sysfs = map[string]map[string]string{}
	for _, top := range []string{"/sys/bus/thunderbolt", "/sys/module/thunderbolt_stream"} {
		err := filepath.WalkDir(top, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			var text string
			if e.Type()&fs.ModeSymlink != 0 {
				if text, err = os.Readlink(path); err != nil {
					return err
				}
			} else {
				b, err := os.ReadFile(path)
				if errors.Is(err, syscall.EACCES) {
					return nil // write-only (bind, uevent of a driver)
				}
				if err != nil {
					return err
				}
				text = strings.TrimSuffix(string(b), "\n")
			}
			rel, err := filepath.Rel("/sys", filepath.Dir(path))
			if err != nil {
				return err
			}
			if d.Sysfs[rel] == nil {
				d.Sysfs[rel] = map[string]string{}
			}
			d.Sysfs[rel][e.Name()] = text
			return nil
		})
		if err != nil {
			return d, fmt.Errorf("walk %s: %w", top, err)
		}
	}
	return d, nil
}

// listHost is the part of `tbstream list -json` the tests read.
type listHost struct {
	Name     string                       `json:"name"`
	Fabric   *emu.Counters                `json:"fabric"`
	Sysfs    map[string]map[string]string `json:"sysfs"`
	XDomains []struct {
		Name       string `json:"name"`
		UniqueID   string `json:"unique_id"`
		VendorID   uint32 `json:"vendor"`
		DeviceID   uint32 `json:"device"`
		VendorName string `json:"vendor_name"`
		DeviceName string `json:"device_name"`
		MaxHopID   int    `json:"maxhopid"`
		Generation uint32 `json:"generation"`
		Services   []struct {
			Name, Key string
			PrtcID    uint32 `json:"prtcid"`
		} `json:"services"`
	} `json:"xdomains"`
}

func listJSON(t *testing.T) map[string]listHost {
	t.Helper()
	out, err := exec.Command(binary, "-run", runRoot, "list", "-json").Output()
	require.NoError(t, err, "%s", out)
	var doc struct{ Hosts []listHost }
	require.NoError(t, json.Unmarshal(out, &doc), "%s", out)
	hosts := map[string]listHost{}
	for _, h := range doc.Hosts {
		hosts[h.Name] = h
	}
	return hosts
}

// TestDiscoveryFromGoMatchesListJSON runs the Go discovery inside each
// host's shell and checks every file it read against list -json, and the
// XDomain's files against list's XDomain data.
func TestDiscoveryFromGoMatchesListJSON(t *testing.T) {
	needHosts(t)
	peers := map[string]string{"host1": "0-503", "host2": "0-1"}
	for host, xd := range peers {
		t.Run(host, func(t *testing.T) {
			c := exec.Command(binary, "-run", runRoot, "shell", host, os.Args[0])
			c.Env = append(os.Environ(), discoverEnv+"=1")
			out, err := c.Output()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				t.Fatalf("discovery in %s's shell: %v\n%s", host, err, exit.Stderr)
			}
			require.NoError(t, err)
			var found discovered
			require.NoError(t, json.Unmarshal(out, &found), "%s", out)
			require.Equal(t, xd+".0", found.Service)

			l := listJSON(t)[host]
			require.Equal(t, l.Sysfs, found.Sysfs, "every file in %s's shell reads what list -json says", host)

			files := found.Sysfs["bus/thunderbolt/devices/"+xd]
			require.Len(t, l.XDomains, 1)
			x := l.XDomains[0]
			require.Equal(t, xd, x.Name)
			require.Equal(t, x.DeviceName, files["device_name"])
			require.Equal(t, x.VendorName, files["vendor_name"])
			require.Equal(t, x.UniqueID, files["unique_id"])
			require.Equal(t, fmt.Sprintf("%#x", x.VendorID), files["vendor"])
			require.Equal(t, fmt.Sprintf("%#x", x.DeviceID), files["device"])
			require.Equal(t, strconv.Itoa(x.MaxHopID), files["maxhopid"])
			require.Len(t, x.Services, 1)
			svc := found.Sysfs["bus/thunderbolt/devices/"+found.Service]
			require.Equal(t, x.Services[0].Key, svc["key"])
			require.Equal(t, strconv.Itoa(int(x.Services[0].PrtcID)), svc["prtcid"])
			require.Equal(t, "tbsvc:kstreamp00000001v00000001r00000000", svc["modalias"])
			other := "host2"
			if host == "host2" {
				other = "host1"
			}
			require.Equal(t, other, files["device_name"], "the peer's name")
		})
	}
}

// TestUnplugRemovesTheServiceDirectory pulls host1's cable out while a
// loop in host2's shell watches 0-1.0: it must disappear (with its
// XDomain), then come back with the re-plug, bound to the driver again.
func TestUnplugRemovesTheServiceDirectory(t *testing.T) {
	needHosts(t)
	out := must(t, "host2", fmt.Sprintf(`d=/sys/bus/thunderbolt/devices
[ "$(cat $d/0-1.0/key)" = stream ]
%s -run %s unplug host1
n=0
while [ -e $d/0-1.0 ]; do n=$((n+1)); [ $n -lt 200000 ] || { echo "0-1.0 never went"; exit 1; }; done
echo gone
[ ! -e $d/0-1 ] && echo "xdomain gone"
ls $d
n=0
while [ ! -e $d/0-1.0/key ]; do n=$((n+1)); [ $n -lt 6000 ] || { echo "0-1.0 never came back"; exit 1; }; sleep 0.01; done
echo back
cat $d/0-1.0/key
basename "$(readlink $d/0-1.0/driver)"
cat $d/0-1/device_name`, binary, runRoot))
	require.Contains(t, out, "gone\n")
	require.Contains(t, out, "back\nstream\nthunderbolt_stream\nhost1\n")
	// While it was gone, only the domain and the host router were left;
	// the XDomain went with its service, or with the next look.
	require.Regexp(t, `gone\n(xdomain gone\n)?0-0\n(0-1\n)?domain0\n`, out)
	// The streams work again after the re-plug.
	dir := t.TempDir()
	must(t, "host2", receiver("replug"))
	recv := start("host2", "dd if=/dev/tbstream0 of="+dir+"/out bs=64k status=none")
	must(t, "host1", sender("replug"))
	must(t, "host1", "head -c 1048576 /dev/zero > /dev/tbstream0")
	o, err := recv()
	require.NoError(t, err, o)
	st, err := os.Stat(dir + "/out")
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, st.Size())
	cleanup(t, "replug")
}

// TestPropertyChangeReachesThePeer adds a stream on host1 (its property
// block gains the stream's HopIDs): host2's XDomain for host1 shows a new
// generation, and its service directory stays.
func TestPropertyChangeReachesThePeer(t *testing.T) {
	needHosts(t)
	gen := func() uint32 {
		l := listJSON(t)["host2"]
		require.Len(t, l.XDomains, 1)
		return l.XDomains[0].Generation
	}
	before := gen()
	// A watcher in host2's shell: the XDomain's files must stay while
	// host2 re-reads host1's properties (Linux keeps the device).
	flags := t.TempDir()
	watch := start("host2", fmt.Sprintf(`: > %[1]s/ready
n=0
until [ -e %[1]s/stop ]; do
	[ -e /sys/bus/thunderbolt/devices/0-1/rx_speed ] || { echo "0-1 vanished"; exit 1; }
	n=$((n+1)); [ $n -lt 1000000 ] || exit 2
done`, flags))
	for i := 0; i < 400; i++ {
		if _, err := os.Stat(flags + "/ready"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	must(t, "host1", fmt.Sprintf("mkdir -p %[1]s/0-503.0/prop && echo -1 > %[1]s/0-503.0/prop/in_hopid && echo -1 > %[1]s/0-503.0/prop/out_hopid", root))
	// Re-reading takes a moment (PROPERTIES_CHANGED, then the paged
	// read): look again until it changed, a bounded number of times.
	for i := 0; i < 400 && gen() == before; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(t, os.WriteFile(flags+"/stop", nil, 0o644))
	out, err := watch()
	require.NoError(t, err, "host2's view of host1 while it re-read: %s", out)
	require.NotEqual(t, before, gen(), "host2 re-read host1's properties")
	require.Equal(t, "stream\n", must(t, "host2", "cat /sys/bus/thunderbolt/devices/0-1.0/key"))
	must(t, "host1", "cd "+root+" && rmdir -p 0-503.0/prop")
}

// TestDeviceNodeExistsOnlyWithItsStream: /dev/tbstreamN of the shell is
// there from mkdir to rmdir; before, opening it gives ENOENT.
func TestDeviceNodeExistsOnlyWithItsStream(t *testing.T) {
	needHosts(t)
	out := must(t, "host2", fmt.Sprintf(`[ ! -e /dev/tbstream0 ] && [ ! -L /dev/tbstream0 ] && echo absent
dd if=/dev/zero of=/dev/tbstream0 bs=1 count=1 conv=nocreat 2>&1 || :
cat /dev/tbstream0 2>&1 || :
mkdir -p %[1]s/0-1.0/node
[ -e /dev/tbstream0 ] && echo present
cd %[1]s && rmdir -p 0-1.0/node
[ ! -e /dev/tbstream0 ] && [ ! -L /dev/tbstream0 ] && echo gone
[ -c /dev/null ] && echo "null is a character device"`, root))
	require.Equal(t, "absent\n"+
		"dd: failed to open '/dev/tbstream0': No such file or directory\n"+
		"cat: /dev/tbstream0: No such file or directory\n"+
		"present\ngone\nnull is a character device\n", out)
}

// TestModprobeInShell: modprobe thunderbolt_stream succeeds under set -e,
// and modprobe -r says the module is in use while a stream exists.
func TestModprobeInShell(t *testing.T) {
	needHosts(t)
	must(t, "host1", "set -e; modprobe thunderbolt_stream; modprobe -q thunderbolt-stream; [ -d /sys/module/thunderbolt_stream ]")
	out, err := sh("host1", fmt.Sprintf("mkdir -p %[1]s/0-503.0/mod; rc=0; modprobe -r thunderbolt_stream || rc=$?; cd %[1]s && rmdir -p 0-503.0/mod; exit $rc", root))
	require.Error(t, err)
	require.Equal(t, "modprobe: FATAL: Module thunderbolt_stream is in use.\n", out)
}
