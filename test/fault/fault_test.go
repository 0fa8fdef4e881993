//go:build fault

// Package fault does to the two emulated hosts what users and machines do
// to them: kill -9 of a daemon in the middle of a transfer, down and up in
// a row, stale files pointing at a process that is not ours, a host that
// cannot start, a run directory another user planted symlinks in, a script
// that starts the hosts while it holds a lock. Every case ends with a
// transfer checked by sha256, and
// each prints one row (case, figure, verdict) to the file named by
// TBSTREAM_FAULT_TABLE, which test/suites.d/fault.sh shows as a table.
// The figures are printed, never compared with a limit.
//
// Run with: go test -tags fault ./test/fault (as root).
package fault

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var tbstreamBin string // the tbstream command built for the run

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "tbstream-fault-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		tbstreamBin = filepath.Join(dir, "tbstream")
		if out, err := exec.Command("go", "build", "-o", tbstreamBin, "../../cmd/tbstream").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build tbstream: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// row records one line of the fault table.
func row(t *testing.T, figure string) {
	t.Helper()
	figure = strings.ReplaceAll(strings.TrimSpace(figure), "\n", "; ")
	verdict := "ok"
	if t.Failed() {
		verdict = "FAILED"
	}
	t.Logf("%s: %s: %s", t.Name(), figure, verdict)
	path := os.Getenv("TBSTREAM_FAULT_TABLE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("fault table: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%s\t%s\n", t.Name(), figure, verdict)
}

// fabric is one run root with the two hosts of `tbstream up`.
type fabric struct {
	t   *testing.T
	run string
	bin string // the tbstream command
}

func newFabric(t *testing.T) *fabric {
	t.Helper()
	return newFabricAt(t, filepath.Join(t.TempDir(), "run"))
}

// newFabricAt is newFabric on the run root run.
func newFabricAt(t *testing.T, run string) *fabric {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mounts, mount namespaces)")
	}
	f := &fabric{t: t, run: run, bin: tbstreamBin}
	t.Cleanup(func() {
		if out, err := f.tbstream("down"); err != nil {
			t.Errorf("tbstream down: %v\n%s", err, out)
		}
		if m := f.mounts(); len(m) > 0 {
			t.Errorf("mounts left after down: %v", m)
		}
	})
	return f
}

func (f *fabric) tbstream(args ...string) (string, error) {
	out, err := exec.Command(f.bin, append([]string{"-run", f.run}, args...)...).CombinedOutput()
	return string(out), err
}

func (f *fabric) up() {
	f.t.Helper()
	out, err := f.tbstream("up")
	require.NoError(f.t, err, "tbstream up: %s\n%s", out, f.logs())
}

func (f *fabric) logs() string {
	var b strings.Builder
	for _, h := range []string{"host1", "host2"} {
		out, _ := os.ReadFile(filepath.Join(f.run, h, "log"))
		fmt.Fprintf(&b, "--- %s log\n%s", h, out)
	}
	return b.String()
}

// pid is the daemon's PID from its pid file.
func (f *fabric) pid(host string) int {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.run, host, "pid"))
	require.NoError(f.t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(f.t, err)
	return pid
}

// mounts lists the mount points under the run root.
func (f *fabric) mounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(f.t, err)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if fl := strings.Fields(line); len(fl) > 4 && strings.HasPrefix(fl[4], f.run+"/") {
			out = append(out, fl[4])
		}
	}
	return out
}

func (f *fabric) shellCmd(host, script string) *exec.Cmd {
	return exec.Command(f.bin, "-run", f.run, "shell", host, "bash", "-ec", script)
}

func (f *fabric) must(host, script string) string {
	f.t.Helper()
	out, err := f.start(host, script)()
	require.NoError(f.t, err, "%s: %s\n%s", host, script, out)
	return out
}

// start runs a script in the background; wait returns its output and
// error, or fails the test when it has not ended within a hang guard.
func (f *fabric) start(host, script string) (wait func() (string, error)) {
	var out bytes.Buffer
	c := f.shellCmd(host, script)
	c.Stdout, c.Stderr = &out, &out
	// The guard kills the script's whole process group, and Wait does
	// not wait for a straggler that still holds the output pipe.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	require.NoError(f.t, c.Start())
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	return func() (string, error) {
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(2 * time.Minute):
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
			f.t.Fatalf("%s: still running after 2 minutes: %s\n%s", host, script, out.String())
			return "", nil
		}
	}
}

const root = "/sys/kernel/config/thunderbolt/stream"

// groups of each host's peer service.
var group = map[string]string{"host1": "0-503.0", "host2": "0-1.0"}

// stream sets up stream name on both hosts (host2 allocates the HopIDs,
// host1 takes them from its announcement) and returns each side's node.
func (f *fabric) stream(name string) (dev1, dev2 string) {
	f.t.Helper()
	f.must("host2", fmt.Sprintf(`mkdir -p %[1]s/0-1.0/%[2]s
echo -1 > %[1]s/0-1.0/%[2]s/in_hopid
echo -1 > %[1]s/0-1.0/%[2]s/out_hopid`, root, name))
	f.must("host1", fmt.Sprintf(`mkdir -p %[1]s/0-503.0/%[2]s
for i in $(seq 400); do [ "$(cat %[1]s/0-503.0/%[2]s/out_hopid)" -gt 0 ] && exit 0; sleep 0.05; done
echo "no HopIDs from host2's announcement" >&2; exit 1`, root, name))
	node := func(host string) string {
		return "/dev/tbstream" + strings.TrimSpace(f.must(host, fmt.Sprintf("cat %s/%s/%s/index", root, group[host], name)))
	}
	return node("host1"), node("host2")
}

// transfer sends size random bytes from host1 to host2 over a new stream
// and checks them by sha256.
func (f *fabric) transfer(name string, size int) {
	f.t.Helper()
	dir := f.t.TempDir()
	dev1, dev2 := f.stream(name)
	recv := f.start("host2", fmt.Sprintf("dd if=%s of=%s/out bs=256k status=none", dev2, dir))
	f.must("host1", fmt.Sprintf("head -c %d /dev/urandom > %[2]s/in && dd if=%[2]s/in of=%s bs=256k status=none", size, dir, dev1))
	out, err := recv()
	require.NoError(f.t, err, out)
	sums := strings.Fields(f.must("host2", fmt.Sprintf("sha256sum %[1]s/in %[1]s/out", dir)))
	require.Len(f.t, sums, 4)
	require.Equal(f.t, sums[0], sums[2], "sha256 of what host1 sent and host2 received")
}

// A daemon killed with SIGKILL in the middle of a transfer: the other
// side's dd ends, and `tbstream up` alone brings the host back (no
// umount, no rm), after which a transfer arrives intact.
func TestKill9MidTransfer(t *testing.T) {
	for _, victim := range []string{"host2", "host1"} {
		t.Run(victim, func(t *testing.T) {
			f := newFabric(t)
			f.up()
			dev1, dev2 := f.stream("before")
			dir := t.TempDir()
			recv := f.start("host2", fmt.Sprintf("dd if=%s of=%s/out bs=256k status=none", dev2, dir))
			send := f.start("host1", fmt.Sprintf("dd if=/dev/zero of=%s bs=256k count=100000 status=none", dev1))
			require.Eventually(t, func() bool {
				st, err := os.Stat(dir + "/out")
				return err == nil && st.Size() > 16<<20
			}, time.Minute, 10*time.Millisecond, "the transfer is under way")
			require.NoError(t, syscall.Kill(f.pid(victim), syscall.SIGKILL))
			killed := time.Now()
			// Both ends' dd stop: the victim's with ENOTCONN from its
			// dead mounts, the survivor's with EOF or an error.
			send()
			recv()
			ended := time.Since(killed)
			out, err := f.tbstream("list")
			require.Error(t, err, "list must fail while %s is dead:\n%s", victim, out)
			require.Contains(t, out, "Host "+victim+": not running")

			t0 := time.Now()
			f.up()
			restarted := time.Since(t0)
			log, err := os.ReadFile(filepath.Join(f.run, victim, "log"))
			require.NoError(t, err)
			require.Contains(t, string(log), "removed what a daemon that died left behind")
			out, err = f.tbstream("list")
			require.NoError(t, err, out)
			f.transfer("after", 32<<20)
			row(t, fmt.Sprintf("both dd ended %v after the kill; up took %v; then 32 MiB sha256-equal", ended.Round(time.Millisecond), restarted.Round(time.Millisecond)))
		})
	}
}

// down returns only when the daemons are gone with their mounts, so an
// up right after it always works.
func TestDownUpCycles(t *testing.T) {
	f := newFabric(t)
	const cycles = 5
	for i := 0; i < cycles; i++ {
		f.up()
		out, err := f.tbstream("down")
		require.NoError(t, err, out)
		require.Empty(t, f.mounts(), "mounts after down, cycle %d", i)
		for _, h := range []string{"host1", "host2"} {
			require.NoFileExists(t, filepath.Join(f.run, h, "pid"))
			require.NoFileExists(t, filepath.Join(f.run, h, "status.sock"))
		}
	}
	f.up()
	f.transfer("cycled", 8<<20)
	row(t, fmt.Sprintf("%d down/up cycles, no mount or pid file left after any down; then 8 MiB sha256-equal", cycles))
}

// A stale pid file names a process that is not the daemon (PIDs are
// reused): down must not signal it, and must clean up.
func TestDownSparesStrangerInStalePidFile(t *testing.T) {
	f := newFabric(t)
	f.up()
	require.NoError(t, syscall.Kill(f.pid("host2"), syscall.SIGKILL))
	require.Eventually(t, func() bool {
		_, err := f.tbstream("list")
		return err != nil
	}, time.Minute, 20*time.Millisecond)
	stranger := exec.Command("sleep", "300")
	require.NoError(t, stranger.Start())
	defer stranger.Process.Kill()
	exited := make(chan struct{})
	go func() { stranger.Wait(); close(exited) }()
	require.NoError(t, os.WriteFile(filepath.Join(f.run, "host2", "pid"), []byte(strconv.Itoa(stranger.Process.Pid)+"\n"), 0o644))
	out, err := f.tbstream("down")
	require.NoError(t, err, out)
	require.Contains(t, out, "host2: removed stale pid")
	select {
	case <-exited:
		t.Fatalf("down signalled pid %d, which a stale pid file named", stranger.Process.Pid)
	case <-time.After(200 * time.Millisecond):
	}
	require.Empty(t, f.mounts())
	f.up()
	f.transfer("spared", 4<<20)
	row(t, "a stranger's PID in host2's stale pid file: not signalled; stale mounts, socket, pid removed; then 4 MiB sha256-equal")
}

// A host that cannot start is reported with its own error at once, not
// as a peer that did not show up after 30 s.
func TestUpReportsTheHostsError(t *testing.T) {
	f := newFabric(t)
	require.NoError(t, os.MkdirAll(filepath.Join(f.run, "host2"), 0o755))
	blocker := filepath.Join(f.run, "host2", "config")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644))
	t0 := time.Now()
	out, err := f.tbstream("up")
	took := time.Since(t0)
	require.Error(t, err)
	require.Contains(t, out, "host2 exited")
	require.Contains(t, out, "not a directory")
	require.NoError(t, os.Remove(blocker))
	f.up()
	f.transfer("reported", 4<<20)
	row(t, fmt.Sprintf("host2 cannot mount its configfs: up failed after %v with host2's own error (not a directory); then 4 MiB sha256-equal", took.Round(time.Millisecond)))
}

// counts are a daemon's goroutines, threads and open files, as
// `tbstream list -v` prints them, and its own goroutines: those running
// tbstream code, from `tbstream stacks` (go-fuse keeps a varying number of
// idle request readers, which are not a leak).
type counts struct{ goroutines, threads, fds, own int }

var countsLine = regexp.MustCompile(`^Host (\S+) .*\n  tbstreamd pid \d+: (\d+) goroutines, (\d+) threads, (\d+) open files`)

func (f *fabric) counts() map[string]counts {
	f.t.Helper()
	out, err := f.tbstream("list", "-v")
	require.NoError(f.t, err, out)
	m := map[string]counts{}
	for _, block := range strings.SplitAfter(out, "\n\n") {
		if c := countsLine.FindStringSubmatch(block); c != nil {
			g, _ := strconv.Atoi(c[2])
			th, _ := strconv.Atoi(c[3])
			fd, _ := strconv.Atoi(c[4])
			m[c[1]] = counts{goroutines: g, threads: th, fds: fd}
		}
	}
	require.Len(f.t, m, 2, out)
	for h, c := range m {
		stacks, err := f.tbstream("stacks", h)
		require.NoError(f.t, err, stacks)
		for _, g := range strings.Split(stacks, "\n\n") {
			if !strings.Contains(g, "goroutine ") {
				continue
			}
			for _, line := range strings.Split(g, "\n") {
				if strings.HasPrefix(line, "tbstream/") {
					c.own++
					break
				}
			}
		}
		m[h] = c
	}
	return m
}

// Many open/close and mkdir/rmdir cycles leak no file and no goroutine in
// either daemon. Threads are shown, not checked: Go keeps the threads it
// once needed. The counts are compared exactly, so a leak of one file or
// goroutine in a thousand cycles shows; the defaults (about 55 s here)
// keep test/run.sh inside its time, TBSTREAM_FAULT_OPENS and
// TBSTREAM_FAULT_MKDIRS make it a longer soak.
func TestNoLeaksOverCycles(t *testing.T) {
	opens := envInt(t, "TBSTREAM_FAULT_OPENS", 3000)
	mkdirs := envInt(t, "TBSTREAM_FAULT_MKDIRS", 1000)
	f := newFabric(t)
	f.up()
	dev1, dev2 := f.stream("cycles")
	before := f.counts()
	// host2 reads, so that each close's CLOSE frame is taken at once;
	// each CLOSE ends one cat.
	tmp := t.TempDir()
	stop, stopped := filepath.Join(tmp, "stop"), filepath.Join(tmp, "stopped")
	reader := f.start("host2", fmt.Sprintf("while [ ! -e %s ]; do cat %s > /dev/null; done; touch %s", stop, dev2, stopped))
	// In rounds, so that each shell stays well inside start's hang guard
	// (a close that finds host2's cat between two opens waits up to
	// 500 ms for its CLOSE frame).
	for done := 0; done < opens; done += 500 {
		f.must("host1", fmt.Sprintf("for i in $(seq %d); do exec 3<>%s; exec 3>&-; done", min(500, opens-done), dev1))
	}
	require.NoError(t, os.WriteFile(stop, nil, 0o644))
	// One more CLOSE ends the last cat; a CLOSE that finds host2 between
	// two cats is lost (as on Linux, nothing is delivered while the peer
	// is closed), so close again until the reader has seen stop.
	f.must("host1", fmt.Sprintf("for i in $(seq 600); do [ -e %s ] && exit 0; exec 3<>%s; exec 3>&-; sleep 0.1; done; exit 1", stopped, dev1))
	out, err := reader()
	require.NoError(t, err, out)
	for done := 0; done < mkdirs; done += 500 {
		f.must("host2", fmt.Sprintf("for i in $(seq %d); do mkdir %s/0-1.0/c; rmdir %[2]s/0-1.0/c; done", min(500, mkdirs-done), root))
	}
	// Goroutines that end on their own (idle FUSE request readers) get
	// a while to do so.
	var after map[string]counts
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		after = f.counts()
		leaked := false
		for h, b := range before {
			if a := after[h]; a.fds != b.fds || a.own != b.own {
				leaked = true
			}
		}
		if !leaked {
			break
		}
		if time.Now().After(deadline) {
			stacks, _ := f.tbstream("stacks")
			t.Fatalf("open files or goroutines not back to what they were after 30 s: before %+v, after %+v\n%s", before, after, stacks)
		}
	}
	f.transfer("leakchk", 8<<20)
	fig := fmt.Sprintf("%d open/close, %d mkdir/rmdir:", opens, mkdirs)
	for _, h := range []string{"host1", "host2"} {
		b, a := before[h], after[h]
		fig += fmt.Sprintf(" %s fds %d→%d, own goroutines %d→%d (all %d→%d), threads %d→%d;", h, b.fds, a.fds, b.own, a.own, b.goroutines, a.goroutines, b.threads, a.threads)
	}
	row(t, fig+" then 8 MiB sha256-equal")
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	return n
}

// pattern is the byte stream in which every 8-byte word holds its own
// offset (big-endian): a lost, duplicated or reordered byte anywhere is
// found at the first word after it.
type pattern struct{ off, size int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.size-p.off))
	for i := 0; i < n; {
		var w [8]byte
		word := (p.off + int64(i)) &^ 7
		binary.BigEndian.PutUint64(w[:], uint64(word))
		k := copy(b[i:n], w[(p.off+int64(i))-word:])
		i += k
	}
	p.off += int64(n)
	return n, nil
}

// 4 GiB from host1 to host2 while host2's reader stalls now and then (it
// stops reading for a while, so the ring fills and the sender waits on
// credits): every byte arrives once and in order.
func TestStallingReaderLosesNothing(t *testing.T) {
	size := int64(envInt(t, "TBSTREAM_FAULT_STALL_MIB", 4096)) << 20
	f := newFabric(t)
	f.up()
	dev1, dev2 := f.stream("stall")
	recv := f.shellCmd("host2", fmt.Sprintf("dd if=%s bs=256k status=none", dev2))
	stdout, err := recv.StdoutPipe()
	require.NoError(t, err)
	var recvErr bytes.Buffer
	recv.Stderr = &recvErr
	require.NoError(t, recv.Start())
	send := f.shellCmd("host1", fmt.Sprintf("dd of=%s bs=256k status=none", dev1))
	send.Stdin = &pattern{size: size}
	var sendOut bytes.Buffer
	send.Stdout, send.Stderr = &sendOut, &sendOut
	require.NoError(t, send.Start())
	sent := make(chan error, 1)
	go func() { sent <- send.Wait() }()

	want := pattern{size: size}
	got, exp := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	stalls := 0
	for {
		n, err := io.ReadFull(stdout, got)
		if n > 0 {
			want.Read(exp[:n])
			if !bytes.Equal(got[:n], exp[:n]) {
				i := 0
				for got[i] == exp[i] {
					i++
				}
				recv.Process.Kill()
				send.Process.Kill()
				t.Fatalf("byte %d differs: got word %x, want %x", off+int64(i), got[i&^7:i&^7+8], exp[i&^7:i&^7+8])
			}
			off += int64(n)
		}
		if err != nil {
			break
		}
		// Every 256 MiB, stop reading for 300 ms.
		if off%(256<<20) == 0 {
			stalls++
			time.Sleep(300 * time.Millisecond)
		}
	}
	require.NoError(t, recv.Wait(), recvErr.String())
	select {
	case err := <-sent:
		require.NoError(t, err, sendOut.String())
	case <-time.After(2 * time.Minute):
		t.Fatal("the sender did not end")
	}
	require.Equal(t, size, off, "bytes received")
	row(t, fmt.Sprintf("%d MiB with %d reader stalls of 300 ms: every 8-byte word at its offset, 0 bytes lost, duplicated or reordered", size>>20, stalls))
}

// The cable is pulled out while host1's writer is blocked (host2 has no
// reader, so the ring and the credits are used up) and plugged in again.
// The writer must not end as if its bytes had been delivered: it either
// fails, or goes on once host2 reads. A new stream after the re-plug
// carries a transfer intact.
func TestUnplugWhileWriterBlocked(t *testing.T) {
	f := newFabric(t)
	f.up()
	dev1, dev2 := f.stream("blocked")
	writer := f.start("host1", fmt.Sprintf("dd if=/dev/zero of=%s bs=256k count=400 status=none", dev1))
	row1 := regexp.MustCompile(`0-503\.0\s+blocked\s+\S+\s+\d+\s+\d+\s+\d+\s+(\S+)\s+\d+\s+(\d+)\s`)
	require.Eventually(t, func() bool {
		out, _ := f.tbstream("list")
		m := row1.FindStringSubmatch(out)
		return m != nil && m[1] == "open" && m[2] != "0"
	}, time.Minute, 20*time.Millisecond, "host1's stream is open and has sent something")
	time.Sleep(200 * time.Millisecond) // the writer is blocked on credits by now
	out, err := f.tbstream("unplug", "host1")
	require.NoError(t, err, out)
	require.Eventually(t, func() bool {
		out, err := f.tbstream("list")
		return err == nil && strings.Count(out, "XDomain") == 2
	}, time.Minute, 50*time.Millisecond, "both hosts see each other again")
	f.transfer("replug", 8<<20)

	// The old writer: ended with an error, or still waiting for a reader.
	outcome := "failed"
	received := "-"
	ended := make(chan struct{})
	var wout string
	var werr error
	go func() { wout, werr = writer(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		outcome = "went on once host2 read"
		drain := f.start("host2", fmt.Sprintf("dd if=%s bs=256k status=none | wc -c", dev2))
		<-ended
		n, err := drain()
		require.NoError(t, err, n)
		received = strings.TrimSpace(n)
	}
	if outcome == "failed" {
		require.Error(t, werr, "a writer whose bytes were not delivered must not exit 0: %s", wout)
	} else {
		require.NoError(t, werr, wout)
		require.Equal(t, strconv.Itoa(400*256<<10), received, "a writer that exits 0 delivered every byte")
	}
	row(t, fmt.Sprintf("cable pulled out under a blocked writer and plugged in again: the writer %s (%s), host2 read %s bytes; then 8 MiB sha256-equal on a new stream", outcome, strings.TrimSpace(wout), received))
}

// raceBinary is tbstream built with the race detector, for the stress
// test (built once, when first needed).
var raceBinary = sync.OnceValues(func() (string, error) {
	path := filepath.Join(filepath.Dir(tbstreamBin), "tbstream-race")
	out, err := exec.Command("go", "build", "-race", "-o", path, "../../cmd/tbstream").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -race: %v\n%s", err, out)
	}
	return path, nil
})

// watchdog tracks operations in flight and fails the test, with both
// daemons' goroutine stacks, when one has been stuck for longer than
// limit.
type watchdog struct {
	mu    sync.Mutex
	next  int
	ops   map[int]watchedOp
	limit time.Duration
}

type watchedOp struct {
	what  string
	since time.Time
}

func (w *watchdog) begin(what string) (end func()) {
	w.mu.Lock()
	id := w.next
	w.next++
	w.ops[id] = watchedOp{what, time.Now()}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.ops, id)
		w.mu.Unlock()
	}
}

// stuck returns an operation in flight for longer than the limit.
func (w *watchdog) stuck() (watchedOp, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, op := range w.ops {
		if time.Since(op.since) > w.limit {
			return op, true
		}
	}
	return watchedOp{}, false
}

// Many goroutines of this process use both hosts' devices and configfs
// directly, at once, while the cable is pulled out now and then: writers
// on host1 (open, write, close), readers on host2 (open, read to EOF,
// close), mkdir/rmdir of scratch streams and attribute reads on both. The
// daemons run with the race detector. Errors are expected (a pulled cable
// fails what is in flight); what fails the test is an operation stuck for
// 30 s (with both daemons' stacks), a data race, a daemon that dies, and
// a transfer that does not arrive intact at the end.
func TestConcurrencyStress(t *testing.T) {
	bin, err := raceBinary()
	require.NoError(t, err)
	dur := time.Duration(envInt(t, "TBSTREAM_FAULT_STRESS_SECONDS", 25)) * time.Second
	f := newFabric(t)
	f.bin = bin
	f.up()
	const streams = 3
	var dev1, dev2 [streams]string
	for i := range streams {
		dev1[i], dev2[i] = f.stream(fmt.Sprintf("st%d", i))
	}
	node := func(host, dev string) string { return filepath.Join(f.run, host, "dev", filepath.Base(dev)) }
	cfg := func(host string) string {
		return filepath.Join(f.run, host, "config/thunderbolt/stream", group[host])
	}
	wd := &watchdog{ops: map[int]watchedOp{}, limit: 30 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops, errs atomic.Int64
	do := func(what string, op func() error) {
		end := wd.begin(what)
		err := op()
		end()
		ops.Add(1)
		if err != nil {
			errs.Add(1)
		}
	}
	loop := func(fn func(i int)) {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				fn(i)
			}
		})
	}
	for s := range streams {
		loop(func(i int) {
			do(fmt.Sprintf("host1 write %s", dev1[s]), func() error {
				fd, err := os.OpenFile(node("host1", dev1[s]), os.O_WRONLY, 0)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					return err
				}
				defer fd.Close()
				_, err = fd.Write(make([]byte, 1+i%300000))
				return err
			})
		})
		loop(func(i int) {
			do(fmt.Sprintf("host2 read %s", dev2[s]), func() error {
				fd, err := os.OpenFile(node("host2", dev2[s]), os.O_RDONLY, 0)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					return err
				}
				defer fd.Close()
				_, err = io.Copy(io.Discard, fd)
				return err
			})
		})
	}
	for _, h := range []string{"host1", "host2"} {
		loop(func(i int) {
			do(h+" mkdir/rmdir", func() error {
				dir := filepath.Join(cfg(h), fmt.Sprintf("x%d", i%4))
				if err := os.Mkdir(dir, 0o755); err != nil {
					return err
				}
				os.WriteFile(filepath.Join(dir, "in_hopid"), []byte("-1\n"), 0)
				return os.Remove(dir)
			})
		})
		loop(func(i int) {
			do(h+" attributes", func() error {
				_, err := os.ReadFile(filepath.Join(cfg(h), fmt.Sprintf("st%d", i%streams), []string{"index", "in_hopid", "out_hopid", "ring_size"}[i%4]))
				return err
			})
		})
	}
	unplugs := 0
	loop(func(i int) {
		time.Sleep(3 * time.Second)
		do("unplug", func() error {
			_, err := f.tbstream("unplug", []string{"host1", "host2"}[i%2])
			return err
		})
		unplugs++
	})

	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		if op, ok := wd.stuck(); ok {
			stacks, _ := f.tbstream("stacks")
			close(stop)
			t.Fatalf("%s stuck for more than %v\n%s", op.what, wd.limit, stacks)
		}
		time.Sleep(time.Second)
	}
	close(stop)
	// Readers may wait for a writer that has stopped: an open and close
	// on host1 (a CLOSE frame) ends them. A reader may open just after
	// one, so nudge until all have stopped.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	giveUp := time.After(wd.limit)
	for stopped := false; !stopped; {
		for s := range streams {
			if fd, err := os.OpenFile(node("host1", dev1[s]), os.O_WRONLY, 0); err == nil {
				fd.Close()
			}
		}
		select {
		case <-finished:
			stopped = true
		case <-time.After(200 * time.Millisecond):
		case <-giveUp:
			stacks, _ := f.tbstream("stacks")
			t.Fatalf("the workers did not stop within %v\n%s", wd.limit, stacks)
		}
	}
	f.transfer("final", 8<<20)
	logs := f.logs()
	require.NotContains(t, logs, "DATA RACE", logs)
	require.NotContains(t, logs, "panic:", logs)
	row(t, fmt.Sprintf("%v of open/close/read/write/mkdir/rmdir/attribute reads from %d goroutines, %d unplugs, race detector on: %d operations (%d failed, as a pulled cable makes them), none stuck for %v; then 8 MiB sha256-equal",
		dur, 2*streams+5, unplugs, ops.Load(), errs.Load(), wd.limit))
}

// startDaemon runs `tbstream daemon` for host in the run root, as `up`
// would, with the given cable flags; the fabric's cleanup stops it.
func (f *fabric) startDaemon(host string, args ...string) {
	f.t.Helper()
	f.startDaemonWith(host, nil, args...)
}

// startDaemonWith is startDaemon passing the daemon extra as its
// descriptors 3...
func (f *fabric) startDaemonWith(host string, extra []*os.File, args ...string) {
	f.t.Helper()
	dir := filepath.Join(f.run, host)
	require.NoError(f.t, os.MkdirAll(dir, 0o755))
	logf, err := os.Create(filepath.Join(dir, "log"))
	require.NoError(f.t, err)
	defer logf.Close()
	c := exec.Command(f.bin, append([]string{"daemon", "-name", host, "-run-dir", dir, "-device-prefix", host + "/"}, args...)...)
	c.Stdout, c.Stderr = logf, logf
	c.ExtraFiles = extra
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(f.t, c.Start())
	go c.Wait()
}

// The two hosts over a TCP cable with a shared key, while a stranger
// holds a silent connection to host2's listener and another floods it
// with connections and made-up HELLOs: host1 still plugs in, no stranger
// is ever plugged, and a transfer arrives intact.
func TestTCPCableStrangerAndFlood(t *testing.T) {
	f := newFabric(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	key := filepath.Join(t.TempDir(), "cable.key")
	require.NoError(t, os.WriteFile(key, []byte("a shared secret of this test run, 32+ bytes long\n"), 0o600))
	f.startDaemon("host2", "-adapter", "1", "-peer-route", "1", "-listen", "tcp:"+addr, "-cable-key", key)
	var silent net.Conn
	require.Eventually(t, func() bool {
		silent, err = net.Dial("tcp", addr)
		return err == nil
	}, time.Minute, 20*time.Millisecond, "host2 listens")
	defer silent.Close()

	stopFlood := make(chan struct{})
	var flooded atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			// A made-up version 1 HELLO (what the cable accepted before
			// it had keys), then junk.
			hello := append([]byte{1, 0, 0, 0, 0, 12, 0, 0}, []byte("TBSC\x00\x00\x00\x01\x00\x00\x00\x2a")...)
			for {
				select {
				case <-stopFlood:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				flooded.Add(1)
				c.SetDeadline(time.Now().Add(500 * time.Millisecond))
				c.Write(hello)
				io.Copy(io.Discard, c)
				c.Close()
			}
		})
	}
	for flooded.Load() < 200 {
		time.Sleep(5 * time.Millisecond)
	}
	f.startDaemon("host1", "-adapter", "3", "-peer-route", "503", "-connect", "tcp:"+addr, "-cable-key", key)
	t0 := time.Now()
	require.Eventually(t, func() bool {
		out, err := f.tbstream("list")
		return err == nil && strings.Count(out, "stream (prtcid 1)") == 2
	}, 2*time.Minute, 50*time.Millisecond, "host1 plugs in while the flood goes on")
	plugged := time.Since(t0)
	close(stopFlood)
	wg.Wait()
	out, err := f.tbstream("list")
	require.NoError(t, err, out)
	require.Equal(t, 1, strings.Count(out, "XDomain 0-1:"), "host2 sees host1 only:\n%s", out)
	require.Equal(t, 1, strings.Count(out, "XDomain"+" 0-503:"), out)
	f.transfer("keyed", 8<<20)
	row(t, fmt.Sprintf("TCP cable with a key; a silent stranger and %d flood connections with made-up HELLOs: host1 plugged in %v into the flood, no stranger plugged; then 8 MiB sha256-equal", flooded.Load(), plugged.Round(time.Millisecond)))
}

// writeAttr writes b to an attribute with one write(2) and returns its
// errno (0: accepted) and what the attribute reads afterwards.
func writeAttr(t *testing.T, path string, b []byte) (syscall.Errno, string) {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_TRUNC, 0)
	require.NoError(t, err, path)
	_, werr := syscall.Write(fd, b)
	syscall.Close(fd)
	var errno syscall.Errno
	if werr != nil {
		require.ErrorAs(t, werr, &errno)
	}
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	return errno, strings.TrimSpace(string(after))
}

// The bad-input table, against a running daemon's configfs: each input,
// written with one write(2) after the HopID was released, with the errno
// Linux's configfs store and kstrtoint(base 0) give it (0: taken) and the
// value the attribute shows after it. A negative value asks for any HopID
// (tb_xdomain_alloc_in_hopid takes it as "from 8"); a write of nothing
// never reaches the store.
func TestBadAttributeInputs(t *testing.T) {
	f := newFabric(t)
	f.up()
	group := filepath.Join(f.run, "host2", "config/thunderbolt/stream/0-1.0")
	require.NoError(t, os.MkdirAll(filepath.Join(group, "bad"), 0o755))
	attr := filepath.Join(group, "bad", "in_hopid")
	cases := []struct {
		name  string
		input []byte
		errno syscall.Errno
		shows string
	}{
		{"empty", []byte(""), 0, "0"},
		{"newline", []byte("\n"), syscall.EINVAL, "0"},
		{"hex", []byte("0x10"), 0, "16"},
		{"minus two", []byte("-2"), 0, "8"},
		{"int overflow", []byte("2147483648"), syscall.ERANGE, "0"},
		{"20 digits", []byte(strings.Repeat("9", 20)), syscall.ERANGE, "0"},
		{"5 KiB of digits", []byte(strings.Repeat("1", 5<<10)), syscall.ERANGE, "0"},
		{"binary junk", []byte{0xff, 0xfe, 0x01, 0x80}, syscall.EINVAL, "0"},
		{"two lines", []byte("1\n2"), syscall.EINVAL, "0"},
		{"spaces", []byte(" 8 "), syscall.EINVAL, "0"},
		{"plus", []byte("+8"), 0, "8"},
		{"octal", []byte("010"), 0, "8"},
		{"NUL then junk", []byte("9\x00junk"), 0, "9"},
		{"above maxhopid", []byte("20"), syscall.EINVAL, "0"},
		{"below 8", []byte("7"), syscall.EINVAL, "0"},
	}
	for _, tt := range cases {
		if errno, _ := writeAttr(t, attr, []byte("0\n")); errno != 0 {
			t.Fatalf("release the HopID: %v", errno)
		}
		errno, shows := writeAttr(t, attr, tt.input)
		require.Equal(t, tt.errno, errno, "%s: errno", tt.name)
		require.Equal(t, tt.shows, shows, "%s: the attribute after it", tt.name)
	}
	// Writing the HopID it holds again: the IDA gives another, so EBUSY.
	errno, _ := writeAttr(t, attr, []byte("9"))
	require.Zero(t, errno)
	errno, shows := writeAttr(t, attr, []byte("9"))
	require.Equal(t, syscall.EBUSY, errno)
	require.Equal(t, "9", shows)
	names := []struct {
		dir, name string
		err       error
	}{
		{group, strings.Repeat("n", 255), syscall.ENAMETOOLONG}, // over the stream name's 8 bytes
		{group, strings.Repeat("n", 256), syscall.ENAMETOOLONG}, // over NAME_MAX
		{group, "ü", nil},
		{group, "0-1.ü", nil},
		{filepath.Dir(group), "ü", syscall.EINVAL},
		{filepath.Dir(group), "0-1.ü", syscall.EINVAL},
	}
	for _, n := range names {
		err := os.Mkdir(filepath.Join(n.dir, n.name), 0o755)
		if n.err == nil {
			require.NoError(t, err)
			require.NoError(t, os.Remove(filepath.Join(n.dir, n.name)))
		} else {
			require.ErrorIs(t, err, n.err, "mkdir of %d bytes", len(n.name))
		}
	}
	require.NoError(t, os.Remove(filepath.Join(group, "bad")))
	f.transfer("afterbad", 4<<20)
	row(t, fmt.Sprintf("%d attribute inputs and %d names against a running daemon: the errno and value Linux gives each; then 4 MiB sha256-equal", len(cases)+1, len(names)))
}

// nobody is the unprivileged user who owns the run directory planted with
// symlinks.
const nobody = 65534

// snapshot is what a directory holds, symlinks not followed: per name its
// mode, owner, size and modification time, and a file's sha256 or a
// symlink's target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		what := fmt.Sprintf("mode %o uid %d size %d mtime %d.%09d", st.Mode, st.Uid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			what += fmt.Sprintf(" sha256 %x", sha256.Sum256(b))
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			what += " -> " + target
		}
		m[p] = what
		return nil
	}))
	return m
}

// processesNaming lists the processes whose command line has s in it.
func processesNaming(t *testing.T, s string) []string {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []string
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, p.Name()+": "+strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " "))
		}
	}
	return out
}

// A run directory another user owns, in which they planted symlinks to
// files outside it (each host's log, lock, pid and status socket, and the
// cable socket): up, up -cable inproc and down each refuse it with one
// line naming it and the fix, start nothing and touch nothing outside it.
// down signals nobody, though the lock links' target is locked by a
// process whose command line says -run-dir, as a daemon's does. A run
// directory of root's that everyone can write is refused the same way.
func TestUpRefusesUnsafeRunDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (up needs it; the run directory is given to uid 65534)")
	}
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("needs flock(1) (util-linux) to hold a lock on the planted lock's target")
	}
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	run := filepath.Join(base, "run")
	require.NoError(t, os.Mkdir(run, 0o755))
	plant := func(link, name string) {
		target := filepath.Join(outside, name)
		require.NoError(t, os.WriteFile(target, []byte("precious "+name+"\n"), 0o600))
		require.NoError(t, os.Symlink(target, link))
		require.NoError(t, os.Lchown(link, nobody, nobody))
	}
	plant(filepath.Join(run, "cable.sock"), "cable.sock")
	for _, h := range []string{"host1", "host2"} {
		dir := filepath.Join(run, h)
		require.NoError(t, os.Mkdir(dir, 0o755))
		for _, name := range []string{"log", "lock", "pid", "status.sock"} {
			plant(filepath.Join(dir, name), h+"."+name)
		}
		require.NoError(t, os.Lchown(dir, nobody, nobody))
	}
	require.NoError(t, os.Lchown(run, nobody, nobody))
	// flock(1) stops parsing at its command: -run-dir is sh's $0.
	holder := exec.Command("flock", "-x", filepath.Join(outside, "host2.lock"), "sh", "-c", "sleep 600", "-run-dir")
	// Its own process group: the kill takes sh and sleep, which
	// hold the lock too.
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, holder.Start())
	exited := make(chan struct{})
	go func() { holder.Wait(); close(exited) }()
	defer func() {
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		<-exited
	}()
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile("/proc/locks")
		return bytes.Contains(b, fmt.Appendf(nil, " %d ", holder.Process.Pid))
	}, 10*time.Second, 10*time.Millisecond, "flock(1) holds its lock")
	before, links := snapshot(t, outside), snapshot(t, run)
	delete(links, run) // its mode and owner change below

	refusals := 0
	for _, c := range []struct {
		mode  uint32
		owner int
		why   string
	}{
		{0o755, nobody, "is owned by uid 65534, not root"},
		{0o777, 0, "is writable by others (mode 0777)"},
	} {
		require.NoError(t, syscall.Chmod(run, c.mode))
		require.NoError(t, os.Lchown(run, c.owner, c.owner))
		for _, args := range [][]string{{"up"}, {"up", "-cable", "inproc"}, {"down"}} {
			out, err := exec.Command(tbstreamBin, append([]string{"-run", run}, args...)...).CombinedOutput()
			require.Error(t, err, "tbstream %v: %s", args, out)
			require.Equal(t, "tbstream: run directory "+run+" "+c.why+"; use a directory only root can write, e.g. -run /run/tbstream\n", string(out),
				"tbstream %v: one line", args)
			refusals++
		}
	}
	select {
	case <-exited:
		t.Fatal("the process locking the planted lock's target was signalled")
	case <-time.After(200 * time.Millisecond):
	}
	require.Equal(t, before, snapshot(t, outside), "files outside the run directory touched")
	after := snapshot(t, run)
	delete(after, run)
	require.Equal(t, links, after, "the run directory changed")
	require.Empty(t, processesNaming(t, run), "processes started for the run directory")
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	require.NotContains(t, string(b), run, "mounts in the run directory")

	// Made root's alone, with the planted links gone, it serves.
	require.NoError(t, filepath.WalkDir(run, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			return os.Remove(p)
		}
		return os.Lchown(p, 0, 0)
	}))
	require.NoError(t, os.Chmod(run, 0o755))
	f := newFabricAt(t, run)
	f.up()
	f.transfer("safe", 4<<20)
	require.Equal(t, before, snapshot(t, outside), "files outside the run directory touched")
	row(t, fmt.Sprintf("run directory of uid 65534, then of root mode 0777, with log, lock, pid and sockets planted as symlinks: %d refusals of up, up -cable inproc and down, each one line; %d files outside untouched; the planted lock's holder not signalled; nothing started or mounted; made root's, then 4 MiB sha256-equal", refusals, len(before)-1))
}

// daemonFD is one of a daemon's open descriptors.
type daemonFD struct {
	target  string // what /proc/PID/fd/N links to
	cloexec bool
	dev     uint64
	ino     uint64
}

// daemonFDs reads pid's open descriptors from /proc.
func daemonFDs(t *testing.T, pid int) map[int]daemonFD {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d", pid)
	entries, err := os.ReadDir(dir + "/fd")
	require.NoError(t, err)
	fds := map[int]daemonFD{}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		target, err := os.Readlink(dir + "/fd/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		info, err := os.ReadFile(dir + "/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		d := daemonFD{target: target}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				require.NoError(t, err, line)
				d.cloexec = flags&syscall.O_CLOEXEC != 0
			}
		}
		// Descriptors of files on the daemon's own mounts are not
		// stat'ed: the stat would be served by the daemon.
		if strings.HasPrefix(target, "/") && !strings.HasPrefix(target, "/dev/fuse") {
			var st syscall.Stat_t
			if syscall.Stat(dir+"/fd/"+e.Name(), &st) == nil {
				d.dev, d.ino = st.Dev, st.Ino
			}
		}
		fds[fd] = d
	}
	return fds
}

// A script that holds a lock on a descriptor (flock(1) does, for its
// command) and starts the hosts: the daemons keep none of its
// descriptors, so its lock is free as soon as it lets it go, while they
// run on. Each daemon has /dev/null as stdin, its log as stdout and
// stderr, and every other descriptor close-on-exec (or /dev/fuse): its
// own, none inherited. With up (each host a daemon, or one pair-daemon) they never
// get the script's descriptors; started directly (tbstream daemon), they
// close them first thing and say so in their log.
func TestDaemonsInheritNoFds(t *testing.T) {
	for _, how := range []string{"up", "up -cable inproc", "daemon"} {
		t.Run(strings.ReplaceAll(how, " ", "_"), func(t *testing.T) {
			f := newFabric(t)
			held := filepath.Join(t.TempDir(), "script.lock")
			lockf, err := os.OpenFile(held, os.O_RDWR|os.O_CREATE, 0o600)
			require.NoError(t, err)
			defer lockf.Close()
			require.NoError(t, syscall.Flock(int(lockf.Fd()), syscall.LOCK_EX))
			var heldSt syscall.Stat_t
			require.NoError(t, syscall.Fstat(int(lockf.Fd()), &heldSt))
			// Two descriptors: the lock, and the pipe a caller would
			// wait on for EOF.
			pr, pw, err := os.Pipe()
			require.NoError(t, err)
			defer pr.Close()
			defer pw.Close()
			extra := []*os.File{lockf, pw}
			if how == "daemon" {
				cable := "unix:" + filepath.Join(f.run, "cable.sock")
				// -v: what a daemon closed at start is a debug message.
				f.startDaemonWith("host2", extra, "-v", "-adapter", "1", "-peer-route", "1", "-listen", cable)
				f.startDaemonWith("host1", extra, "-v", "-adapter", "3", "-peer-route", "503", "-connect", cable)
				require.Eventually(t, func() bool {
					out, err := f.tbstream("list")
					return err == nil && strings.Count(out, "stream (prtcid 1)") == 2
				}, time.Minute, 50*time.Millisecond, "the hosts see each other's stream service")
			} else {
				c := exec.Command(f.bin, append([]string{"-run", f.run}, strings.Fields(how)...)...)
				c.ExtraFiles = extra
				out, err := c.CombinedOutput()
				require.NoError(t, err, "tbstream %s: %s\n%s", how, out, f.logs())
			}
			// The script lets its lock go and closes its end of the pipe.
			require.NoError(t, lockf.Close())
			require.NoError(t, pw.Close())

			// The pair-daemon runs both hosts, its output in one's log.
			logs := map[int][]string{}
			for _, h := range []string{"host1", "host2"} {
				pid := f.pid(h)
				logs[pid] = append(logs[pid], filepath.Join(f.run, h, "log"))
			}
			for pid, hostLogs := range logs {
				fds := daemonFDs(t, pid)
				require.Equal(t, os.DevNull, fds[0].target, "pid %d's stdin", pid)
				require.Contains(t, hostLogs, fds[1].target, "pid %d's stdout", pid)
				require.Equal(t, fds[1].target, fds[2].target, "pid %d's stderr", pid)
				for fd, d := range fds {
					if fd <= 2 {
						continue
					}
					// go-fuse opens /dev/fuse with syscall.Open, which
					// does not add O_CLOEXEC: the daemon's own.
					require.True(t, d.cloexec || d.target == "/dev/fuse", "pid %d's descriptor %d (%s) is not close-on-exec: inherited", pid, fd, d.target)
					require.False(t, d.dev == heldSt.Dev && d.ino == heldSt.Ino, "pid %d holds the script's lock file as descriptor %d", pid, fd)
				}
				if how == "daemon" {
					b, err := os.ReadFile(hostLogs[0])
					require.NoError(t, err)
					require.Contains(t, string(b), "closed descriptors inherited from the starting process")
					require.Contains(t, string(b), held)
				}
			}
			g, err := os.Open(held)
			require.NoError(t, err)
			defer g.Close()
			require.NoError(t, syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB), "the script's lock is still held though the script let it go")
			pr.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := pr.Read(make([]byte, 1))
			require.Equal(t, io.EOF, err, "the script's pipe has a writer still (%d bytes)", n)
			f.transfer("nofds", 4<<20)
			row(t, fmt.Sprintf("%s from a script holding a flock'd file and a pipe: %d daemon(s), each stdin /dev/null, stdout and stderr its log, every other descriptor close-on-exec; the script's lock free and its pipe at EOF as soon as it let them go; then 4 MiB sha256-equal", how, len(logs)))
		})
	}
}
