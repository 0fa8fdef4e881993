//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The errno table of DESIGN.md, one case each, checked by the message the
// shell prints.
func fails(t *testing.T, host, script, message string) {
	t.Helper()
	out, err := sh(host, script)
	require.Error(t, err, "%s succeeded: %s\n%s", host, script, out)
	require.Contains(t, out, message, script)
}

func TestErrnoBadGroupName(t *testing.T) {
	needHosts(t)
	fails(t, "host2", "mkdir "+root+"/backup", "Invalid argument")
}

func TestErrnoStreamNameTooLong(t *testing.T) {
	needHosts(t)
	defer sh("host2", "rmdir "+root+"/0-1.0")
	fails(t, "host2", "mkdir "+root+"/0-1.0 && mkdir "+root+"/0-1.0/ninechars", "File name too long")
}

func TestErrnoHopIDOutOfRange(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("s"))
	defer cleanupHost2("s")
	fails(t, "host2", "echo 7 > "+root+"/0-1.0/s/in_hopid", "Invalid argument")
	fails(t, "host2", "echo 20 > "+root+"/0-1.0/s/out_hopid", "Invalid argument")
	fails(t, "host2", "echo junk > "+root+"/0-1.0/s/in_hopid", "Invalid argument")
}

func cleanupHost2(names ...string) {
	for _, n := range names {
		sh("host2", "rmdir "+root+"/0-1.0/"+n)
	}
	sh("host2", "rmdir "+root+"/0-1.0")
}

func TestErrnoHopIDTaken(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("s")+receiver("t"))
	defer cleanupHost2("s", "t")
	in := strings.TrimSpace(must(t, "host2", "cat "+root+"/0-1.0/s/in_hopid"))
	fails(t, "host2", "echo "+in+" > "+root+"/0-1.0/t/in_hopid", "Device or resource busy")
}

func TestErrnoHopIDsExhausted(t *testing.T) {
	needHosts(t)
	var names []string
	script := "mkdir -p " + root + "/0-1.0\n"
	for i := 0; i < 12; i++ { // input HopIDs 8..19
		n := fmt.Sprintf("s%d", i)
		names = append(names, n)
		script += fmt.Sprintf("mkdir %[1]s/0-1.0/%[2]s && echo -1 > %[1]s/0-1.0/%[2]s/in_hopid\n", root, n)
	}
	must(t, "host2", script)
	names = append(names, "full")
	defer cleanupHost2(names...)
	fails(t, "host2", "mkdir "+root+"/0-1.0/full && echo -1 > "+root+"/0-1.0/full/in_hopid", "No space left on device")
}

func TestErrnoRingSize(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("s"))
	defer cleanupHost2("s")
	fails(t, "host2", "echo 16 > "+root+"/0-1.0/s/ring_size", "Invalid argument")
	fails(t, "host2", "echo 4097 > "+root+"/0-1.0/s/ring_size", "Invalid argument")
	must(t, "host2", "echo 4096 > "+root+"/0-1.0/s/ring_size")
}

func TestErrnoAttributeWhileOpen(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("s"))
	defer cleanup(t, "s")
	must(t, "host1", sender("s"))
	d := dev(t, "host2", "0-1.0", "s")
	// The device is held open by the shell's file descriptor 3.
	fails(t, "host2", "exec 3<"+d+"; echo 64 > "+root+"/0-1.0/s/ring_size", "Device or resource busy")
}

func TestErrnoOpenWithoutHopIDs(t *testing.T) {
	needHosts(t)
	must(t, "host2", "mkdir -p "+root+"/0-1.0 && mkdir "+root+"/0-1.0/s")
	defer cleanupHost2("s")
	fails(t, "host2", "cat "+dev(t, "host2", "0-1.0", "s"), "Invalid argument")
}

func TestErrnoOpenWithoutPeerNonblocking(t *testing.T) {
	needHosts(t)
	must(t, "host2", "mkdir -p "+root+"/0-7.0 && mkdir "+root+"/0-7.0/s && echo 8 > "+root+"/0-7.0/s/in_hopid && echo 8 > "+root+"/0-7.0/s/out_hopid")
	defer sh("host2", "cd "+root+" && rmdir -p 0-7.0/s")
	d := dev(t, "host2", "0-7.0", "s")
	fails(t, "host2", "dd if="+d+" iflag=nonblock count=1 status=none", "No such device or address")
	// Without O_NONBLOCK the open waits for the peer.
	out, err := sh("host2", "timeout 1 dd if="+d+" count=1 status=none || echo rc=$?")
	require.NoError(t, err)
	require.Contains(t, out, "rc=124", "a blocking open waits")
}

func TestErrnoWriteAfterPeerClose(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("s"))
	defer cleanup(t, "s")
	must(t, "host1", sender("s"))
	d2, d1 := dev(t, "host2", "0-1.0", "s"), dev(t, "host1", "0-503.0", "s")
	// host2 keeps the device open; host1 writes and closes (CLOSE frame).
	r := start("host2", "exec 3<>"+d2+"; cat <&3 > /dev/null; echo eof; echo x >&3")
	must(t, "host1", "echo hello > "+d1)
	out, err := r()
	require.Error(t, err)
	require.Contains(t, out, "eof", "read after CLOSE returns 0")
	require.Contains(t, out, "No such device or address", "write after the peer's CLOSE")
}

func TestErrnoWriteAfterPeerRmdir(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("s"))
	must(t, "host1", sender("s"))
	d1 := dev(t, "host1", "0-503.0", "s")
	// host1 holds its device open across its own rmdir: writes fail.
	fails(t, "host1", "exec 3>"+d1+"; cd "+root+" && rmdir -p 0-503.0/s; echo x >&3", "No such device or address")
	must(t, "host2", "cd "+root+" && rmdir -p 0-1.0/s")
}

// Bytes written with no reader on the peer cannot be delivered: through
// the FUSE fallback, close(2) says so with EIO (Linux returns 0 and drops
// them), and the stream counts them.
func TestErrnoCloseWithUndeliveredData(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("u"))
	defer cleanup(t, "u")
	must(t, "host1", sender("u"))
	d1 := dev(t, "host1", "0-503.0", "u")
	fails(t, "host1", "head -c 100000 /dev/zero | dd of="+d1+" bs=64k status=none", "closing output file")
	out, err := exec.Command(binary, "-run", runRoot, "list").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Regexp(t, `0-503\.0\s+u\s.*\s100000\s+\d+\n`, string(out), "UNDELIVERED counts the bytes")
}
