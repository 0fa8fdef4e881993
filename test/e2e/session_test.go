//go:build e2e

package e2e

// Session boundaries with real programs (cmd/internal/stream's package doc,
// "Sessions"): the ways users end sessions early, each run many times in a
// row on one stream pair, each round followed or preceded by a session
// whose reader must get exactly its writer's bytes. Both hosts run their
// side of every round in one script each (one `tbstream shell` per host),
// stepping together through files in a shared directory; each round
// records its outcome in files, and the test counts them: bytes of another
// session delivered, readers with the wrong data, writers left blocked.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// sessionRounds is how many rounds a probe runs (TBSTREAM_SESSION_ROUNDS
// multiplies them).
func sessionRounds(t *testing.T, n int) int {
	if s := os.Getenv("TBSTREAM_SESSION_ROUNDS"); s != "" {
		k, err := strconv.Atoi(s)
		require.NoError(t, err, "TBSTREAM_SESSION_ROUNDS")
		n *= k
	}
	return n
}

// sessionLib is sourced by both hosts' scripts: W is the shared
// directory. step NAME says something happened; await NAME waits for the
// other host to say it (60 s, then the script fails); opened PID waits
// until PID or a child of it has a /dev/tbstream node open (or PID has
// exited). Readers run under timeout(1), so that a round whose data went
// astray ends (and counts) rather than hanging the probe.
const sessionLib = `
step() { : > "$W/$1"; }
await() {
  local i=0
  until [ -e "$W/$1" ]; do
    sleep 0.002; i=$((i + 1))
    [ $i -lt 30000 ] || { echo "waited 60 s for $1" >&2; exit 1; }
  done
}
opened() {
  local p
  until for p in $1 $(cat /proc/$1/task/*/children 2>/dev/null); do ls -l /proc/$p/fd 2>/dev/null; done | grep -q '/dev/tbstream[0-9]'; do
    kill -0 $1 2>/dev/null || return 0
    sleep 0.001
  done
}
`

// sessionPair makes stream name on both hosts (host2 receives, as in the
// documentation) and returns host1's and host2's node.
func sessionPair(t *testing.T, name string) (d1, d2 string) {
	t.Helper()
	must(t, "host2", receiver(name))
	t.Cleanup(func() { cleanup(t, name) })
	must(t, "host1", sender(name))
	return dev(t, "host1", "0-503.0", name), dev(t, "host2", "0-1.0", name)
}

// runBoth runs host1's and host2's scripts (sessionLib first, W and the
// other variables set) and fails the test with both outputs if either
// failed.
func runBoth(t *testing.T, vars, host1, host2 string) {
	t.Helper()
	w2 := start("host2", sessionLib+vars+host2)
	out1, err1 := start("host1", sessionLib+vars+host1)()
	out2, err2 := w2()
	require.NoError(t, err1, "host1: %s\nhost2: %s\n%s", out1, out2, logTails())
	require.NoError(t, err2, "host2: %s\nhost1: %s\n%s", out2, out1, logTails())
}

func vars(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "%s=%s\n", kv[i], kv[i+1])
	}
	return b.String()
}

// tally counts a probe's rounds.
type tally struct {
	rounds, foreign, wrong, blocked, told int
	notes                                 []string
}

func (c *tally) bad(round int, format string, args ...any) {
	if len(c.notes) < 10 {
		c.notes = append(c.notes, fmt.Sprintf("round %d: ", round)+fmt.Sprintf(format, args...))
	}
}

// report logs the probe's line of the table and fails the test unless
// every round was right.
func (c *tally) report(t *testing.T, probe string) {
	t.Helper()
	t.Logf("SESSIONS %s: %d rounds: %d with bytes of another session, %d readers with wrong data, %d writers left blocked, %d writers told (ENXIO)",
		probe, c.rounds, c.foreign, c.wrong, c.blocked, c.told)
	require.Zero(t, c.foreign+c.wrong+c.blocked, "%s\n%s", strings.Join(c.notes, "\n"), logTails())
}

func readFile(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

// image writes n random bytes to dir/img and returns its path and sha256.
func image(t *testing.T, dir string, n int) (string, [32]byte) {
	img := filepath.Join(dir, "img")
	must(t, "host1", fmt.Sprintf("head -c %d /dev/urandom > %s", n, img))
	b, err := os.ReadFile(img)
	require.NoError(t, err)
	return img, sha256.Sum256(b)
}

// checkCopy counts a round whose reader should have got img: wrong data,
// and whether it holds bytes of an ended session (their pattern, "stale").
func (c *tally) checkCopy(t *testing.T, round int, path string, want [32]byte, size int) {
	got := readFile(t, path)
	switch {
	case sha256.Sum256(got) == want:
	case bytes.Contains(got, []byte("stale")):
		c.foreign++
		c.bad(round, "the new reader got %d bytes, with bytes of the ended session", len(got))
	default:
		c.wrong++
		c.bad(round, "the new reader got %d bytes, not the %d of its writer", len(got), size)
	}
}

// writerOutcome counts how an ended session's writer ended, from the
// files the script left: err.N (dd's stderr), rc.N (its exit status, 124
// when it was still blocked after 20 s).
func (c *tally) writerOutcome(t *testing.T, dir string, round int) {
	rc := strings.TrimSpace(string(readFile(t, filepath.Join(dir, fmt.Sprintf("rc.%d", round)))))
	msg := string(readFile(t, filepath.Join(dir, fmt.Sprintf("err.%d", round))))
	switch {
	case rc == "124":
		c.blocked++
		c.bad(round, "the writer was still blocked 20 s after its reader left")
	case strings.Contains(strings.ToLower(msg), syscall.ENXIO.Error()):
		c.told++
	default:
		c.wrong++
		c.bad(round, "the writer ended with status %s, %q: want ENXIO", rc, strings.TrimSpace(msg))
	}
}

// A reader takes 10 bytes and exits (`head -c 10`), then the writer sends
// its message (`printf … >`), round after round: every reader gets the
// start of its own message, and no CLOSE of a round ends the next one.
func TestSessionsBackToBack(t *testing.T) {
	needHosts(t)
	n := sessionRounds(t, 50)
	dir := t.TempDir()
	d1, d2 := sessionPair(t, "b2b")
	runBoth(t, vars("W", dir, "N", strconv.Itoa(n), "D", d1), `
for i in $(seq $N); do
  await open.$i
  printf '%04d message of the back-to-back run\n' $i > $D
done`, vars("D", d2)+`
for i in $(seq $N); do
  timeout 20 head -c 10 $D > "$W/got.$i" & p=$!
  opened $p; step open.$i
  wait $p || echo "round $i: head exited $?" >&2
done`)
	c := tally{rounds: n}
	for i := 1; i <= n; i++ {
		got := string(readFile(t, filepath.Join(dir, fmt.Sprintf("got.%d", i))))
		want := fmt.Sprintf("%04d messa", i)
		if got == want {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(got+" ", " ", 2)[0])); err == nil && n != i {
			c.foreign++
		} else {
			c.wrong++
		}
		c.bad(i, "head got %q, want %q", got, want)
	}
	c.report(t, "back-to-back head -c 10 / printf")
}

// A reader takes one block and exits while its writer streams: the writer
// fails with ENXIO (it is not left blocked), and the next round's reader
// gets only its own writer's bytes.
func TestSessionsWriterLearnsReaderLeft(t *testing.T) {
	needHosts(t)
	n := sessionRounds(t, 10)
	dir := t.TempDir()
	d1, d2 := sessionPair(t, "left")
	runBoth(t, vars("W", dir, "N", strconv.Itoa(n), "D", d1), `
for i in $(seq $N); do
  await open.$i
  rc=0; yes "round $i" | timeout 20 dd of=$D bs=256k status=none 2>"$W/err.$i" || rc=$?
  echo $rc > "$W/rc.$i"
  step wdone.$i
done`, vars("D", d2)+`
for i in $(seq $N); do
  timeout 20 dd if=$D of="$W/got.$i" bs=4k count=1 status=none & p=$!
  opened $p; step open.$i
  wait $p || echo "round $i: dd exited $?" >&2
  await wdone.$i
done`)
	c := tally{rounds: n}
	for i := 1; i <= n; i++ {
		c.writerOutcome(t, dir, i)
		got := readFile(t, filepath.Join(dir, fmt.Sprintf("got.%d", i)))
		want := bytes.Repeat([]byte(fmt.Sprintf("round %d\n", i)), 4096)
		switch {
		case len(got) > 0 && bytes.HasPrefix(want, got):
		case bytes.Contains(got, []byte("round")):
			c.foreign++
			c.bad(i, "the reader got %q…", got[:min(len(got), 20)])
		default:
			c.wrong++
			c.bad(i, "the reader got %d bytes", len(got))
		}
	}
	c.report(t, "reader leaves, writer streams")
}

// A writer blocked for credits (its reader holds the node and reads
// nothing) is killed along with that reader, the writer first in even
// rounds, the reader first in odd ones; a new session starts at once. The
// new reader gets the new writer's image, nothing of the ended session.
func TestSessionsKilledWriterThenNewSession(t *testing.T) {
	needHosts(t)
	n := sessionRounds(t, 10)
	dir := t.TempDir()
	img, sum := image(t, dir, 4<<20)
	d1, d2 := sessionPair(t, "kill")
	runBoth(t, vars("W", dir, "N", strconv.Itoa(n), "D", d1, "IMG", img), `
for i in $(seq $N); do
  await held.$i
  yes "stale $i" | dd of=$D bs=256k status=none 2>/dev/null & w=$!
  sleep 0.2 # blocked by now: the ring pair is full
  if [ $((i % 2)) = 0 ]; then kill -9 $w; step wkilled.$i; else step wkill.$i; await rkilled.$i; kill -9 $w 2>/dev/null || true; fi
  wait $w 2>/dev/null || true
  await reader.$i
  timeout 20 dd if=$IMG of=$D bs=256k status=none || true
done`, vars("D", d2)+`
for i in $(seq $N); do
  (exec 3<$D; step held.$i; exec sleep 600) & h=$!
  if [ $((i % 2)) = 0 ]; then await wkilled.$i; kill -9 $h; else await wkill.$i; kill -9 $h; step rkilled.$i; fi
  wait $h 2>/dev/null || true
  timeout 20 dd if=$D of="$W/copy.$i" bs=256k status=none & r=$!
  opened $r; step reader.$i
  wait $r || echo "round $i: dd exited $?" >&2
done`)
	c := tally{rounds: n}
	for i := 1; i <= n; i++ {
		c.checkCopy(t, i, filepath.Join(dir, fmt.Sprintf("copy.%d", i)), sum, 4<<20)
	}
	c.report(t, "blocked writer killed, new session at once")
}

// A reader is killed (SIGKILL) in the middle of a transfer: its writer
// fails with ENXIO, and the next session's reader gets its writer's image.
func TestSessionsReaderKilledMidTransfer(t *testing.T) {
	needHosts(t)
	n := sessionRounds(t, 10)
	dir := t.TempDir()
	img, sum := image(t, dir, 4<<20)
	d1, d2 := sessionPair(t, "midway")
	runBoth(t, vars("W", dir, "N", strconv.Itoa(n), "D", d1, "IMG", img), `
for i in $(seq $N); do
  await open.$i
  rc=0; yes "stale $i" | timeout 20 dd of=$D bs=256k status=none 2>"$W/err.$i" || rc=$?
  echo $rc > "$W/rc.$i"
  step wdone.$i
  await reader.$i
  timeout 20 dd if=$IMG of=$D bs=256k status=none || true
done`, vars("D", d2)+`
for i in $(seq $N); do
  dd if=$D of="$W/part" bs=64k status=none & r=$!
  opened $r; step open.$i
  until [ "$(stat -c %s "$W/part" 2>/dev/null || echo 0)" -ge 1048576 ]; do sleep 0.001; done
  kill -9 $r; wait $r 2>/dev/null || true
  await wdone.$i
  timeout 20 dd if=$D of="$W/copy.$i" bs=256k status=none & r=$!
  opened $r; step reader.$i
  wait $r || echo "round $i: dd exited $?" >&2
done`)
	c := tally{rounds: n}
	for i := 1; i <= n; i++ {
		c.writerOutcome(t, dir, i)
		c.checkCopy(t, i, filepath.Join(dir, fmt.Sprintf("copy.%d", i)), sum, 4<<20)
	}
	c.report(t, "reader killed mid-transfer")
}

// The receiver's disk fills (dd fails with ENOSPC and exits): the writer
// fails with ENXIO, and the next session's reader gets its writer's image.
func TestSessionsReceiverDiskFull(t *testing.T) {
	needHosts(t)
	n := sessionRounds(t, 10)
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	require.NoError(t, os.Mkdir(small, 0o755))
	require.NoError(t, syscall.Mount("tmpfs", small, "tmpfs", 0, "size=1m"))
	defer syscall.Unmount(small, syscall.MNT_DETACH)
	img, sum := image(t, dir, 4<<20)
	d1, d2 := sessionPair(t, "full")
	runBoth(t, vars("W", dir, "N", strconv.Itoa(n), "D", d1, "IMG", img), `
for i in $(seq $N); do
  await open.$i
  rc=0; yes "stale $i" | timeout 20 dd of=$D bs=256k status=none 2>"$W/err.$i" || rc=$?
  echo $rc > "$W/rc.$i"
  step wdone.$i
  await reader.$i
  timeout 20 dd if=$IMG of=$D bs=256k status=none || true
done`, vars("D", d2)+`
for i in $(seq $N); do
  dd if=$D of="$W/small/out" bs=256k status=none 2>"$W/rerr.$i" & r=$!
  opened $r; step open.$i
  wait $r && echo "round $i: dd into a full disk succeeded" >&2
  rm -f "$W/small/out"
  await wdone.$i
  timeout 20 dd if=$D of="$W/copy.$i" bs=256k status=none & r=$!
  opened $r; step reader.$i
  wait $r || echo "round $i: dd exited $?" >&2
done`)
	c := tally{rounds: n}
	for i := 1; i <= n; i++ {
		if !strings.Contains(string(readFile(t, filepath.Join(dir, fmt.Sprintf("rerr.%d", i)))), "No space left on device") {
			c.bad(i, "the first reader did not stop for a full disk")
			c.wrong++
		}
		c.writerOutcome(t, dir, i)
		c.checkCopy(t, i, filepath.Join(dir, fmt.Sprintf("copy.%d", i)), sum, 4<<20)
	}
	c.report(t, "receiver's disk full")
}

// A stream is removed (rmdir) in the middle of a transfer, on host2 (the
// receiver) in odd rounds and host1 (the sender) in even ones, and made
// again: the writer fails with ENXIO, and the next session's reader gets
// its writer's image.
func TestSessionsRmdirMidTransfer(t *testing.T) {
	needHosts(t)
	n := sessionRounds(t, 10)
	dir := t.TempDir()
	img, sum := image(t, dir, 4<<20)
	const name = "gone"
	must(t, "host2", receiver(name))
	must(t, "host1", sender(name))
	t.Cleanup(func() { cleanup(t, name) })
	s1, s2 := root+"/0-503.0/"+name, root+"/0-1.0/"+name
	node := `$(echo /dev/tbstream$(cat $S/index))`
	runBoth(t, vars("W", dir, "N", strconv.Itoa(n), "S", s1, "IMG", img), `
hopids() {
  for k in $(seq 400); do [ "$(cat $S/out_hopid)" -gt 0 ] && return; sleep 0.05; done
  echo "no HopIDs from host2's announcement" >&2; exit 1
}
for i in $(seq $N); do
  await open.$i
  D=`+node+`
  yes "stale $i" | timeout 20 dd of=$D bs=256k status=none 2>"$W/err.$i" & w=$!
  if [ $((i % 2)) = 0 ]; then
    await part.$i
    rmdir $S
  fi
  rc=0; wait $w || rc=$?
  echo $rc > "$W/rc.$i"
  if [ $((i % 2)) = 0 ]; then mkdir $S; fi
  step wdone.$i
  await remade.$i
  hopids
  await reader.$i
  D=`+node+`
  timeout 20 dd if=$IMG of=$D bs=256k status=none || true
done`, vars("S", s2)+`
for i in $(seq $N); do
  D=`+node+`
  dd if=$D of="$W/part" bs=64k status=none & r=$!
  opened $r; step open.$i
  until [ "$(stat -c %s "$W/part" 2>/dev/null || echo 0)" -ge 1048576 ]; do sleep 0.001; done
  if [ $((i % 2)) = 1 ]; then rmdir $S; else step part.$i; fi
  wait $r || echo "round $i: dd exited $?" >&2
  await wdone.$i
  if [ $((i % 2)) = 1 ]; then mkdir $S && echo -1 > $S/in_hopid && echo -1 > $S/out_hopid; fi
  step remade.$i
  D=`+node+`
  timeout 20 dd if=$D of="$W/copy.$i" bs=256k status=none & r=$!
  opened $r; step reader.$i
  wait $r || echo "round $i: dd exited $?" >&2
done`)
	c := tally{rounds: n}
	for i := 1; i <= n; i++ {
		c.writerOutcome(t, dir, i)
		c.checkCopy(t, i, filepath.Join(dir, fmt.Sprintf("copy.%d", i)), sum, 4<<20)
	}
	c.report(t, "rmdir mid-transfer, host2 and host1 in turn")
}
