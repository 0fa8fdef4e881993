//go:build e2e

// Package e2e runs the kernel documentation's command lines verbatim on two
// emulated hosts (tbstream up), inside `tbstream shell HOST`, with real dd,
// tar, gzip, sha256sum and gst-launch-1.0. On the host the devices are the
// FUSE fallback; the same scripts run against real CUSE in the VM suite.
//
// Run with: go test -tags e2e ./test/e2e (as root).
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu"
)

var (
	binary  string // the tbstream command built for the run
	runRoot string
	setup   error // why the hosts are not up, if they are not
)

func TestMain(m *testing.M) {
	if os.Getenv(discoverEnv) != "" {
		// The test binary run inside `tbstream shell` (discover_test.go).
		os.Exit(discoverHelper(os.Stdout))
	}
	code := func() int {
		dir, err := os.MkdirTemp("", "tbstream-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "tbstream")
		runRoot = filepath.Join(dir, "run")
		if os.Geteuid() != 0 {
			setup = fmt.Errorf("needs root (FUSE mounts, mount namespaces)")
			return m.Run()
		}
		if out, err := exec.Command("go", "build", "-o", binary, "../../cmd/tbstream").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build tbstream: %v\n%s", err, out)
			return 1
		}
		if out, err := exec.Command(binary, "-run", runRoot, "up").CombinedOutput(); err != nil {
			setup = fmt.Errorf("tbstream up: %v\n%s\n%s", err, out, logs())
		}
		defer exec.Command(binary, "-run", runRoot, "down").Run()
		return m.Run()
	}()
	os.Exit(code)
}

func logs() string {
	var b strings.Builder
	for _, h := range []string{"host1", "host2"} {
		out, _ := os.ReadFile(filepath.Join(runRoot, h, "log"))
		fmt.Fprintf(&b, "--- %s log\n%s", h, out)
	}
	return b.String()
}

// logTails is the last lines of both daemons' logs, less DEBUG lines.
func logTails() string {
	var b strings.Builder
	for _, h := range []string{"host1", "host2"} {
		out, _ := os.ReadFile(filepath.Join(runRoot, h, "log"))
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.Contains(l, "level=DEBUG") {
				lines = append(lines, l)
			}
		}
		fmt.Fprintf(&b, "--- %s log, last lines\n%s\n", h, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
}

func needHosts(t *testing.T) {
	t.Helper()
	if setup != nil {
		if os.Geteuid() != 0 {
			t.Skip(setup)
		}
		t.Fatal(setup)
	}
}

// sh runs a script in host's view (configfs at /sys/kernel/config, devices
// at /dev/tbstreamX) and returns its output and error.
func sh(host, script string) (string, error) {
	var out bytes.Buffer
	c := exec.Command(binary, "-run", runRoot, "shell", host, "bash", "-ec", script)
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.String(), err
}

func must(t *testing.T, host, script string) string {
	t.Helper()
	out, err := sh(host, script)
	require.NoError(t, err, "%s: %s\n%s\n%s", host, script, out, logTails())
	return out
}

// start runs a script in the background; wait returns its output and error.
func start(host, script string) (wait func() (string, error)) {
	var out bytes.Buffer
	c := exec.Command(binary, "-run", runRoot, "shell", host, "bash", "-ec", script)
	c.Stdout, c.Stderr = &out, &out
	err := c.Start()
	done := make(chan error, 1)
	go func() {
		if err != nil {
			done <- err
			return
		}
		done <- c.Wait()
	}()
	return func() (string, error) {
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(5 * time.Minute):
			c.Process.Kill()
			return out.String(), fmt.Errorf("%s: timed out: %s", host, script)
		}
	}
}

const root = "/sys/kernel/config/thunderbolt/stream"

// receiver is host2's part of the documentation, for stream name.
func receiver(name string) string {
	return fmt.Sprintf(`mkdir -p %[1]s/0-1.0
mkdir %[1]s/0-1.0/%[2]s
echo -1 > %[1]s/0-1.0/%[2]s/in_hopid
echo -1 > %[1]s/0-1.0/%[2]s/out_hopid
`, root, name)
}

// sender is host1's: the name only; the HopIDs come from host2's
// announcement, which takes a moment to arrive.
func sender(name string) string {
	return fmt.Sprintf(`mkdir -p %[1]s/0-503.0
mkdir %[1]s/0-503.0/%[2]s
for i in $(seq 200); do [ "$(cat %[1]s/0-503.0/%[2]s/out_hopid)" -gt 0 ] && break; sleep 0.05; done
[ "$(cat %[1]s/0-503.0/%[2]s/out_hopid)" -gt 0 ] || { echo "%[2]s: no HopIDs from host2's announcement after 10 s" >&2; exit 1; }
`, root, name)
}

func cleanup(t *testing.T, name string) {
	t.Helper()
	must(t, "host1", fmt.Sprintf("cd %s/ && rmdir -p 0-503.0/%s", root, name))
	must(t, "host2", fmt.Sprintf("cd %s/ && rmdir -p 0-1.0/%s", root, name))
}

// dev returns /dev/tbstreamN of a stream.
func dev(t *testing.T, host, group, name string) string {
	return "/dev/tbstream" + strings.TrimSpace(must(t, host, fmt.Sprintf("cat %s/%s/%s/index", root, group, name)))
}

func TestBackupVerbatim(t *testing.T) {
	needHosts(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "nvme0n1")
	must(t, "host1", "dd if=/dev/urandom of="+img+" bs=1M count=256 status=none")
	// host2, as in the documentation.
	must(t, "host2", `mkdir /sys/kernel/config/thunderbolt/stream/0-1.0
mkdir /sys/kernel/config/thunderbolt/stream/0-1.0/backup
echo -1 > /sys/kernel/config/thunderbolt/stream/0-1.0/backup/in_hopid
echo -1 > /sys/kernel/config/thunderbolt/stream/0-1.0/backup/out_hopid`)
	recv := start("host2", "cd "+dir+" && dd if=/dev/tbstream0 of="+dir+"/host1.nvme0n1.backup-$(date +%F) bs=256k status=none")
	must(t, "host1", `mkdir /sys/kernel/config/thunderbolt/stream/0-503.0
mkdir /sys/kernel/config/thunderbolt/stream/0-503.0/backup`)
	require.Eventually(t, func() bool {
		out, _ := sh("host1", "cat /sys/kernel/config/thunderbolt/stream/0-503.0/backup/out_hopid")
		return strings.TrimSpace(out) != "0"
	}, 20*time.Second, 50*time.Millisecond, "host1's HopIDs come from host2's announcement")
	require.Equal(t, "0\n", must(t, "host1", "cat /sys/kernel/config/thunderbolt/stream/0-503.0/backup/index"))
	must(t, "host1", "dd if="+img+" of=/dev/tbstream0 bs=256k status=none")
	out, err := recv()
	require.NoError(t, err, out)
	sums := must(t, "host2", "cd "+dir+" && sha256sum nvme0n1 host1.nvme0n1.backup-*")
	f := strings.Fields(sums)
	require.Len(t, f, 4, sums)
	require.Equal(t, f[0], f[2], "sha256 of the image and of the backup")
	must(t, "host1", "cd /sys/kernel/config/thunderbolt/stream/ && rmdir -p 0-503.0/backup")
	must(t, "host2", "cd /sys/kernel/config/thunderbolt/stream/ && rmdir -p 0-1.0/backup")
}

// TestBackupsBackToBack runs the backup four times in a row on one
// stream, as a script would: host2's loop reopens for the next copy as
// soon as dd has exited, host1's starts the next dd a moment later (the
// reader first). The last reader's release, which FUSE sends once dd has
// gone, may still be running when the next reader opens and the next
// writer starts. Every copy must be whole.
func TestBackupsBackToBack(t *testing.T) {
	needHosts(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	must(t, "host1", "dd if=/dev/urandom of="+img+" bs=1M count=256 status=none")
	must(t, "host2", receiver("again"))
	defer cleanup(t, "again")
	must(t, "host1", sender("again"))
	d2, d1 := dev(t, "host2", "0-1.0", "again"), dev(t, "host1", "0-503.0", "again")
	before := listJSON(t)
	recv := start("host2", "for i in 0 1 2 3; do dd if="+d2+" of="+dir+"/copy$i bs=256k status=none; done")
	must(t, "host1", "for i in 0 1 2 3; do sleep 0.3; dd if="+img+" of="+d1+" bs=256k status=none; done")
	out, err := recv()
	require.NoError(t, err, out)
	sums := strings.Fields(must(t, "host2", "cd "+dir+" && sha256sum img copy0 copy1 copy2 copy3 && stat -c %s copy0 copy1 copy2 copy3"))
	require.Len(t, sums, 14)
	for i := range 4 {
		require.Equal(t, sums[0], sums[2+2*i], "copy %d: sha256 (%s of %d bytes)", i, sums[10+i], 256<<20)
	}
	// No frame was dropped on the way, not even one counted.
	for name, h := range listJSON(t) {
		require.NotNil(t, h.Fabric, "%s: list -json has the emulated NHI's counters", name)
		require.Equal(t, rxDrops(before[name].Fabric), rxDrops(h.Fabric), "%s: frames dropped: %+v", name, *h.Fabric)
	}
}

// rxDrops sums the frames a host's emulated NHI dropped on arrival.
func rxDrops(c *emu.Counters) uint64 {
	if c == nil {
		return 0
	}
	return c.RxNoPath + c.RxRingStopped + c.RxOverflow + c.RxPDFMismatch
}

func TestTarGzipVerbatim(t *testing.T) {
	needHosts(t)
	dir := t.TempDir()
	// ≥ 1000 files, symlinks and empty files.
	must(t, "host1", `cd `+dir+` && mkdir mydir && cd mydir
for d in $(seq 20); do mkdir -p d$d/sub; for f in $(seq 50); do head -c $((RANDOM * 3 % 70000)) /dev/urandom > d$d/sub/f$f; done; done
for d in $(seq 20); do : > d$d/empty; ln -s sub/f1 d$d/link; ln -s ../d1 d$d/dirlink; done
mkdir -p emptydir`)
	require.Equal(t, "1000\n", must(t, "host1", "find "+dir+"/mydir -type f -path '*sub*' | wc -l"))
	recvDir := filepath.Join(dir, "host2")
	require.NoError(t, os.Mkdir(recvDir, 0o755))
	must(t, "host2", receiver("data"))
	recv := start("host2", "cd "+recvDir+" && gunzip < /dev/tbstream0 | tar xf -")
	must(t, "host1", sender("data"))
	must(t, "host1", "cd "+dir+" && tar cf - mydir | gzip > /dev/tbstream0")
	out, err := recv()
	require.NoError(t, err, out)
	must(t, "host2", "diff -r --no-dereference "+dir+"/mydir "+recvDir+"/mydir")
	cleanup(t, "data")
}

func TestGStreamerVerbatim(t *testing.T) {
	needHosts(t)
	if _, err := exec.LookPath("gst-launch-1.0"); err != nil {
		// The suite installs it (test/suites.d/e2e.sh): missing is a failure.
		t.Fatal("gst-launch-1.0 is not installed: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good")
	}
	const frames = 60
	dir := t.TempDir()
	must(t, "host2", receiver("video"))
	recv := start("host2", "gst-launch-1.0 -q filesrc location=/dev/tbstream0 ! jpegdec ! videoconvert ! pngenc ! multifilesink location="+dir+"/%05d.png")
	must(t, "host1", sender("video"))
	must(t, "host1", fmt.Sprintf("gst-launch-1.0 -q videotestsrc num-buffers=%d ! jpegenc quality=90 ! filesink location=/dev/tbstream0", frames))
	out, err := recv()
	require.NoError(t, err, out)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, frames, "every frame decoded on host2")
	cleanup(t, "video")
}

func TestRmdirLeavesTreesEmptyAndIndexRestarts(t *testing.T) {
	needHosts(t)
	must(t, "host2", receiver("backup"))
	must(t, "host1", sender("backup"))
	require.Equal(t, "/dev/tbstream0\n", must(t, "host1", "ls /dev/tbstream0"))
	cleanup(t, "backup")
	for _, h := range []string{"host1", "host2"} {
		require.Equal(t, "", must(t, h, "ls "+root), "%s's tree is empty", h)
		out, err := sh(h, "ls "+runRoot+"/"+h+"/dev/")
		require.NoError(t, err)
		require.Equal(t, "", out, "%s's nodes are gone", h)
	}
	must(t, "host2", receiver("again"))
	require.Equal(t, "0\n", must(t, "host2", "cat "+root+"/0-1.0/again/index"))
	must(t, "host2", "cd "+root+"/ && rmdir -p 0-1.0/again")
}

func TestTwoStreamsBothDirections(t *testing.T) {
	needHosts(t)
	dir := t.TempDir()
	must(t, "host1", "head -c 50000000 /dev/urandom > "+dir+"/a && head -c 40000000 /dev/urandom > "+dir+"/b")
	must(t, "host2", receiver("up")+receiver("down"))
	must(t, "host1", sender("up")+sender("down"))
	up1, up2 := dev(t, "host1", "0-503.0", "up"), dev(t, "host2", "0-1.0", "up")
	down1, down2 := dev(t, "host1", "0-503.0", "down"), dev(t, "host2", "0-1.0", "down")
	// "up" carries a from host1 to host2, "down" carries b from host2 to
	// host1, at the same time.
	r1 := start("host2", "cat "+up2+" > "+dir+"/a.recv")
	r2 := start("host1", "cat "+down1+" > "+dir+"/b.recv")
	w1 := start("host1", "cat "+dir+"/a > "+up1)
	w2 := start("host2", "cat "+dir+"/b > "+down2)
	for _, w := range []func() (string, error){w1, w2, r1, r2} {
		out, err := w()
		require.NoError(t, err, out)
	}
	must(t, "host1", "cmp "+dir+"/a "+dir+"/a.recv && cmp "+dir+"/b "+dir+"/b.recv")
	must(t, "host1", "cd "+root+"/ && rmdir 0-503.0/up 0-503.0/down 0-503.0")
	must(t, "host2", "cd "+root+"/ && rmdir 0-1.0/up 0-1.0/down 0-1.0")
}

var second = regexp.MustCompile(`another tbstreamd uses this run directory`)

func TestSecondDaemonOnSamePathsFails(t *testing.T) {
	needHosts(t)
	out, err := exec.Command(binary, "daemon", "-name", "x", "-run-dir", filepath.Join(runRoot, "host1")).CombinedOutput()
	require.Error(t, err)
	require.Regexp(t, second, string(out))
	require.Equal(t, 1, strings.Count(strings.TrimSpace(string(out)), "\n")+1, "one clear line: %s", out)
}
