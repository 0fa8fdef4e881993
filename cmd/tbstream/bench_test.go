package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/daemon"
)

const testSeed = 0x5eed_cafe_f00d_0001

func pattern(off uint64, n int) []byte {
	b := make([]byte, n)
	fillPattern(b, off, testSeed)
	return b
}

// The pattern of any range is the same bytes as that range of the
// pattern from 0, whatever the alignment.
func TestFillPatternAnyOffset(t *testing.T) {
	whole := pattern(0, 1000)
	for _, off := range []int{0, 1, 7, 8, 9, 15, 100, 513} {
		for _, n := range []int{0, 1, 5, 8, 13, 64, 300} {
			require.Equal(t, whole[off:off+n], pattern(uint64(off), n), "offset %d, %d bytes", off, n)
		}
	}
}

// feedAll gives c the chunks one after the other, each cut in random
// pieces (as reads of the FUSE fallback return them), and returns the
// first error.
func feedAll(c *checker, r *rand.Rand, chunks ...[]byte) error {
	for _, chunk := range chunks {
		for len(chunk) > 0 {
			n := min(len(chunk), 1+r.IntN(700))
			if err := c.feed(chunk[:n]); err != nil {
				return err
			}
			chunk = chunk[n:]
		}
	}
	return nil
}

// feedWords gives c the chunks 8 bytes at a time.
func feedWords(c *checker, chunks ...[]byte) error {
	for _, chunk := range chunks {
		for i := 0; i < len(chunk); i += 8 {
			if err := c.feed(chunk[i:min(i+8, len(chunk))]); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestCheckerAcceptsThePatternInAnyPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, total := range []int{0, 3, 8, 4095, 4096, 100_003} {
		c := newChecker(testSeed, 0)
		require.NoError(t, feedAll(c, r, pattern(0, total)))
		require.NoError(t, c.finish(uint64(total)), "%d bytes", total)
	}
	// A check that starts at an unaligned offset (a latency message).
	c := newChecker(testSeed, 13)
	require.NoError(t, feedAll(c, r, pattern(13, 50)))
	require.NoError(t, c.finish(63))
}

// Data lost, repeated or reordered in 4 KiB chunks (the frames of a
// stream) is found at the offset where it went wrong, and the error says
// which offset the bytes were sent at.
func TestCheckerFindsChunksOutOfPlace(t *testing.T) {
	const chunk = 4096
	chunks := make([][]byte, 8)
	for i := range chunks {
		chunks[i] = pattern(uint64(i*chunk), chunk)
	}
	cases := []struct {
		name     string
		order    []int
		offset   uint64
		from     uint64
		contains string
	}{
		{"dropped", []int{0, 1, 3, 4}, 2 * chunk, 3 * chunk, "4096 bytes lost or reordered"},
		{"duplicated", []int{0, 1, 2, 2, 3}, 3 * chunk, 2 * chunk, "again (4096 bytes back"},
		{"swapped", []int{0, 2, 1, 3}, 1 * chunk, 2 * chunk, "lost or reordered"},
		{"first dropped", []int{1, 2}, 0, chunk, "4096 bytes lost"},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var data [][]byte
			for _, i := range tc.order {
				data = append(data, chunks[i])
			}
			// In random pieces, and in pieces of one word, where the
			// word after the wrong one always comes in a later feed.
			for _, pieces := range []func(*checker) error{
				func(c *checker) error { return feedAll(c, r, data...) },
				func(c *checker) error { return feedWords(c, data...) },
			} {
				err := pieces(newChecker(testSeed, 0))
				var mm *mismatchError
				require.ErrorAs(t, err, &mm)
				require.Equal(t, tc.offset, mm.Offset, "%v", err)
				from, ok := mm.From()
				require.True(t, ok)
				require.Equal(t, tc.from, from)
				require.Contains(t, err.Error(), tc.contains)
			}
		})
	}
}

func TestCheckerFindsCorruptionAndShortData(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	data := pattern(0, 10_000)
	data[5003] ^= 0x40
	err := feedAll(newChecker(testSeed, 0), r, data)
	var mm *mismatchError
	require.ErrorAs(t, err, &mm)
	require.Equal(t, uint64(5000), mm.Offset, "the offset of the word holding the byte")
	require.Contains(t, err.Error(), "corrupted at offset 5000")

	// Bytes shifted by a loss that is not a multiple of 8 decode to no
	// offset: corruption, still at the right place.
	shifted := append(pattern(0, 800), pattern(803, 200)...)
	err = feedAll(newChecker(testSeed, 0), r, shifted)
	require.ErrorAs(t, err, &mm)
	require.Equal(t, uint64(800), mm.Offset)
	_, ok := mm.From()
	require.False(t, ok)

	// Lost at the end, and a wrong partial last word.
	c := newChecker(testSeed, 0)
	require.NoError(t, feedAll(c, r, pattern(0, 4096)))
	require.ErrorContains(t, c.finish(8192), "received 4096 bytes, the sender sent 8192: 4096 lost at the end")
	tail := pattern(0, 21)
	tail[20] ^= 1
	c = newChecker(testSeed, 0)
	require.NoError(t, c.feed(tail))
	err = c.finish(21)
	require.ErrorAs(t, err, &mm)
	require.Equal(t, uint64(16), mm.Offset)
}

func TestPercentile(t *testing.T) {
	ms := func(vals ...int) []time.Duration {
		var d []time.Duration
		for _, v := range vals {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	require.Equal(t, 50*time.Millisecond, percentile(hundred, 50))
	require.Equal(t, 99*time.Millisecond, percentile(hundred, 99))
	require.Equal(t, 100*time.Millisecond, percentile(hundred, 100))
	require.Equal(t, 1*time.Millisecond, percentile(hundred, 0))

	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i + 1)
	}
	require.Equal(t, time.Duration(990), percentile(thousand, 99))
	require.Equal(t, time.Duration(500), percentile(thousand, 50))

	require.Equal(t, 7*time.Millisecond, percentile(ms(7), 50))
	require.Equal(t, 7*time.Millisecond, percentile(ms(7), 99))
	require.Equal(t, 2*time.Millisecond, percentile(ms(1, 2, 3), 50))
	require.Equal(t, 3*time.Millisecond, percentile(ms(1, 2, 3), 99))
	require.Equal(t, time.Duration(0), percentile(nil, 50))

	// summarize sorts its own copy.
	rtts := ms(9, 1, 5, 3, 7)
	s := summarize(64, 3, rtts)
	require.Equal(t, latencySizeReport{Size: 64, Rounds: 5, Warmup: 3, MinUs: 1000, P50Us: 5000, P99Us: 9000, MaxUs: 9000}, s)
	require.Equal(t, ms(9, 1, 5, 3, 7), rtts)
}

func TestHelloEncoding(t *testing.T) {
	cases := []*hello{
		{Mode: modeBandwidth, WriteSize: 256 << 10, Duration: 3 * time.Second, SeedUp: 1, SeedDown: 2},
		{Mode: modeBandwidth, Bidir: true, WriteSize: minWriteSize, Bytes: 1 << 30, SeedUp: ^uint64(0), SeedDown: 7},
		{Mode: modeLatency, SeedUp: 42, Sizes: []latencySize{{64, 100, 1000}, {1 << 20, 6, 64}}},
	}
	for _, h := range cases {
		msg := h.marshal()
		tag, n, err := readHeader(bytes.NewReader(msg))
		require.NoError(t, err)
		require.Equal(t, tagHello, tag)
		require.Equal(t, len(msg)-msgHeaderSize, int(n))
		got, err := unmarshalHello(msg[msgHeaderSize:])
		require.NoError(t, err)
		require.Equal(t, h, got)
	}
	// The layout is fixed: version, mode, flags, then the numbers.
	msg := cases[1].marshal()
	require.Equal(t, []byte("HELO"), msg[:4])
	require.Equal(t, []byte{helloFixedSize, 0, 0, 0}, msg[4:8])
	require.Equal(t, []byte{1, 0, byte(modeBandwidth), flagBidir, 16, 0, 0, 0}, msg[8:16])

	bad := func(edit func(b []byte) []byte) error {
		b := slices.Clone(cases[2].marshal()[msgHeaderSize:])
		_, err := unmarshalHello(edit(b))
		return err
	}
	require.ErrorContains(t, bad(func(b []byte) []byte { b[0] = 2; return b }), "protocol version 2")
	require.ErrorContains(t, bad(func(b []byte) []byte { b[2] = 9; return b }), "unknown test")
	require.ErrorContains(t, bad(func(b []byte) []byte { b[3] = 0x80; return b }), "unknown flags")
	require.ErrorContains(t, bad(func(b []byte) []byte { return append(b, 0) }), "want 66")
	require.ErrorContains(t, bad(func(b []byte) []byte { return b[:len(b)-1] }), "want 66")
	require.ErrorContains(t, bad(func(b []byte) []byte { return b[:10] }), "at least")
	require.ErrorContains(t, bad(func(b []byte) []byte { b[helloFixedSize] = 0; b[helloFixedSize+1] = 0; return b }), "message size 0")
	// A bandwidth test must have a write size a server can allocate.
	h := *cases[0]
	h.WriteSize = maxWriteSize + 1
	_, err := unmarshalHello(h.marshal()[msgHeaderSize:])
	require.ErrorContains(t, err, "write size")
	h = *cases[0]
	h.Duration = 0
	_, err = unmarshalHello(h.marshal()[msgHeaderSize:])
	require.ErrorContains(t, err, "duration")

	res := &result{RxBytes: 5, RxTime: time.Second, TxBytes: 6, TxTime: 2 * time.Second, Err: "boom"}
	msg = res.marshal()
	got, err := unmarshalResult(msg[msgHeaderSize:])
	require.NoError(t, err)
	require.Equal(t, res, got)
	_, err = unmarshalResult(msg[msgHeaderSize : len(msg)-1])
	require.Error(t, err)

	require.NoError(t, parseReady(readyMessage(nil)[msgHeaderSize:]))
	require.ErrorContains(t, parseReady(readyMessage(errors.New("no"))[msgHeaderSize:]), "the server refused the test: no")
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"4096": 4096, "64k": 64 << 10, "256KiB": 256 << 10, "1M": 1 << 20, "1MB": 1 << 20, "2g": 2 << 30, "0": 0} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "k", "1x", "1kk", "-1", "99999999999G"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
}

func TestSizeText(t *testing.T) {
	require.Equal(t, "256 KiB", sizeText(256<<10))
	require.Equal(t, "3 GiB", sizeText(3<<30))
	require.Equal(t, "1025 KiB", sizeText(1025<<10))
	require.Equal(t, "100 bytes", sizeText(100))
	require.Equal(t, "3145733 bytes", sizeText(3<<20+5))
}

// duplex is one end of a bidirectional byte pipe.
type duplex struct {
	io.Reader
	io.Writer
}

// pipePair joins a client and a server end through a middle that passes
// the client's bytes through damage (nil: unchanged).
func pipePair(t *testing.T, damage func(b []byte, off int64) []byte) (client, server io.ReadWriter) {
	c, m1 := net.Pipe()
	m2, s := net.Pipe()
	t.Cleanup(func() { c.Close(); m1.Close(); m2.Close(); s.Close() })
	go io.Copy(m1, m2)
	go func() {
		buf := make([]byte, 3000)
		var off int64
		for {
			n, err := m1.Read(buf)
			if err != nil {
				m2.Close()
				return
			}
			out := buf[:n]
			if damage != nil {
				out = damage(slices.Clone(out), off)
			}
			off += int64(n)
			if _, err := m2.Write(out); err != nil {
				return
			}
		}
	}()
	return duplex{c, c}, duplex{s, s}
}

func testOptions() clientOptions {
	return clientOptions{Bandwidth: true, Latency: true, Bytes: 300_001, WriteSize: 4096, Sizes: []int{1, 64, 5000},
		Rounds: 20, Client: "c", Server: "s"}
}

// The client and the server agree over any byte pipe, in both modes and
// both directions, and count exactly what was sent.
func TestClientAndServerOverAPipe(t *testing.T) {
	for _, bidir := range []bool{false, true} {
		client, server := pipePair(t, nil)
		serverErr := make(chan error, 1)
		var tests []serverTest
		go func() { serverErr <- serveConn(server, func(st serverTest) { tests = append(tests, st) }) }()
		opts := testOptions()
		opts.Bidir = bidir
		rep, err := runClient(context.Background(), []*benchConn{newBenchConn(client)}, opts)
		require.NoError(t, err)
		client.(duplex).Writer.(net.Conn).Close()
		require.NoError(t, <-serverErr)

		require.Len(t, rep.Bandwidth.Streams, 1)
		dirs := rep.Bandwidth.Streams[0].Directions
		if bidir {
			require.Len(t, dirs, 2)
			require.Equal(t, directionReport{From: "s", To: "c", Bytes: 300_001}, zeroTimes(dirs[1]))
		} else {
			require.Len(t, dirs, 1)
		}
		require.Equal(t, directionReport{From: "c", To: "s", Bytes: 300_001}, zeroTimes(dirs[0]))
		require.Len(t, rep.Latency.Sizes, 3)
		for i, s := range rep.Latency.Sizes {
			require.Equal(t, opts.Sizes[i], s.Size)
			require.Equal(t, 20, s.Rounds)
			require.LessOrEqual(t, s.MinUs, s.P50Us)
			require.LessOrEqual(t, s.P50Us, s.P99Us)
			require.LessOrEqual(t, s.P99Us, s.MaxUs)
		}
		require.Len(t, tests, 2)
		require.Equal(t, "bandwidth", tests[0].Mode)
		require.Equal(t, uint64(300_001), tests[0].RxBytes)
		require.Equal(t, "latency", tests[1].Mode)
		require.Equal(t, uint64(20+3)*(1+64+5000), tests[1].RxBytes)
	}
}

// chunkReader returns its chunks one per Read (cut to the caller's
// buffer) and records how much each Read asked for.
type chunkReader struct {
	chunks [][]byte
	asked  []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.asked = append(r.asked, len(p))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// A ping-pong message takes first what the buffered reader holds, then
// reads only the bytes missing from the device: a read(2) of
// readBufferSize would make FUSE pin that much memory for a small message.
func TestReadMessageAsksTheDeviceForWhatIsMissing(t *testing.T) {
	dev := &chunkReader{chunks: [][]byte{[]byte("abc"), []byte("defgh"), []byte("ij")}}
	c := newBenchConn(duplex{dev, io.Discard})
	b, err := c.r.ReadByte() // a control message's last byte; "bc" stays buffered
	require.NoError(t, err)
	require.Equal(t, byte('a'), b)

	msg := make([]byte, 7)
	require.NoError(t, c.readMessage(msg))
	require.Equal(t, "bcdefgh", string(msg))
	require.NoError(t, c.readMessage(msg[:2]))
	require.Equal(t, "ij", string(msg[:2]))
	require.Equal(t, []int{readBufferSize, 5, 2}, dev.asked)
	require.ErrorIs(t, c.readMessage(msg[:1]), io.EOF)
}

func zeroTimes(d directionReport) directionReport {
	d.Seconds, d.MBps = 0, 0
	return d
}

// A byte changed on the way is reported at its offset, by the server
// that saw it (bandwidth) or by the client checking the echo (latency).
func TestClientAndServerFindDamage(t *testing.T) {
	flipAt := func(at int64) func(b []byte, off int64) []byte {
		return func(b []byte, off int64) []byte {
			if at >= off && at < off+int64(len(b)) {
				b[at-off] ^= 0x10
			}
			return b
		}
	}
	// The HELO and REDY take the first bytes; this is well inside the
	// first DATA message, whose payload starts after its own 8-byte
	// header: stream byte 1000 is payload byte 1000-hello-8.
	helloLen := int64(len((&hello{Mode: modeBandwidth}).marshal()))
	opts := testOptions()
	opts.Latency = false
	client, server := pipePair(t, flipAt(1000))
	go serveConn(server, nil)
	_, err := runClient(context.Background(), []*benchConn{newBenchConn(client)}, opts)
	require.ErrorContains(t, err, "the server found: client → server: data corrupted at offset ")
	payloadOff := 1000 - helloLen - msgHeaderSize
	require.Contains(t, err.Error(), "offset "+strconv.FormatInt(payloadOff&^7, 10)+":")

	opts = testOptions()
	opts.Bandwidth = false
	latHello := int64(len((&hello{Mode: modeLatency, Sizes: make([]latencySize, 3)}).marshal()))
	client, server = pipePair(t, flipAt(latHello+100))
	go serveConn(server, nil)
	_, err = runClient(context.Background(), []*benchConn{newBenchConn(client)}, opts)
	require.ErrorContains(t, err, "echo of a 64-byte message: data corrupted at offset 96")
}

// startHosts starts host1 and host2 in this process with the command
// lines tbstream up gives them (a unix-socket cable), on the FUSE
// fallback, and waits until each sees the other's stream service.
func startHosts(ctx context.Context, t *testing.T) string {
	t.Helper()
	return startHostsAt(ctx, t, t.TempDir())
}

// startHostsAt is startHosts on the run root run.
func startHostsAt(ctx context.Context, t *testing.T, run string) string {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, h := range demoHosts {
		args := append([]string{"-name", h.name, "-run-dir", hostDir(run, h.name), "-devices", "fuse"}, h.args(run)...)
		opts, err := daemon.ParseFlags("test", args)
		require.NoError(t, err)
		opts.Logger = quiet
		d, err := daemon.Start(ctx, opts)
		require.NoError(t, err)
		t.Cleanup(d.Stop)
	}
	for _, h := range demoHosts {
		for {
			st, err := daemon.ReadStatus(hostDir(run, h.name))
			if err == nil && hasStreamService(st) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s never saw its peer's stream service: %v", h.name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return run
}

// testContext ends with the test's deadline (go test -timeout): waits in
// the test end there, not at a threshold of their own.
func testContext(t *testing.T) context.Context {
	ctx := context.Background()
	if deadline, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-5*time.Second))
		t.Cleanup(cancel)
	}
	return ctx
}

// The emulated mode end to end on real hosts: streams made through
// configfs, the same client and server as -connect and -serve on the
// FUSE fallback devices, and the streams gone afterwards.
func TestBenchEmulatedHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the hosts mount FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
	ctx := testContext(t)
	run := startHosts(ctx, t)

	// Two streams, both directions at once, a byte count; then latency
	// on the first stream.
	opts := clientOptions{Bandwidth: true, Latency: true, Bidir: true, Bytes: 3<<20 + 5, WriteSize: 64 << 10,
		Sizes: []int{64, 4096, 65536}, Rounds: 30}
	rep, err := benchHosts(ctx, run, 2, itemAttrs{throttling: -1}, opts)
	require.NoError(t, err)
	require.Equal(t, "fuse", rep.Devices)
	require.Len(t, rep.ClientDevices, 2)
	for i, p := range rep.ClientDevices {
		require.True(t, strings.HasPrefix(p, filepath.Join(run, "host1", "dev", "tbstream")), p)
		require.True(t, strings.HasPrefix(rep.ServerDevices[i], filepath.Join(run, "host2", "dev", "tbstream")), rep.ServerDevices[i])
	}
	require.Len(t, rep.Bandwidth.Streams, 2)
	for _, s := range rep.Bandwidth.Streams {
		require.Len(t, s.Directions, 2)
		require.Equal(t, directionReport{From: "host1", To: "host2", Bytes: 3<<20 + 5}, zeroTimes(s.Directions[0]))
		require.Equal(t, directionReport{From: "host2", To: "host1", Bytes: 3<<20 + 5}, zeroTimes(s.Directions[1]))
	}
	require.Len(t, rep.Bandwidth.All, 2)
	require.Equal(t, uint64(2*(3<<20+5)), rep.Bandwidth.All[0].Bytes)
	require.Len(t, rep.Latency.Sizes, 3)
	for _, s := range rep.Latency.Sizes {
		require.Equal(t, 30, s.Rounds)
		require.Positive(t, s.P50Us)
	}

	// One stream for a while, one direction.
	opts = clientOptions{Bandwidth: true, Duration: 300 * time.Millisecond, WriteSize: 256 << 10}
	rep, err = benchHosts(ctx, run, 1, itemAttrs{throttling: -1}, opts)
	require.NoError(t, err)
	require.Len(t, rep.Bandwidth.Streams[0].Directions, 1)
	require.Positive(t, rep.Bandwidth.Streams[0].Directions[0].Bytes)

	for _, h := range demoHosts {
		st, err := daemon.ReadStatus(hostDir(run, h.name))
		require.NoError(t, err)
		for _, g := range st.Groups {
			require.Empty(t, g.Streams, "%s: the run's streams are removed", h.name)
		}
	}
}

func TestIntervalLines(t *testing.T) {
	prev := []streamCount{{sent: 1e6, received: 0}, {sent: 0, received: 5}}
	cur := []streamCount{{sent: 3e6, received: 2e6}, {sent: 1e6, received: 5}}
	got := intervalLines(time.Second, 2*time.Second, prev, cur, true, "host1", "host2")
	assert.Equal(t, []string{
		" 1.00-2.00 s       0   host1   host2       2000000       2.0",
		" 1.00-2.00 s       0   host2   host1       2000000       2.0",
		" 1.00-2.00 s       1   host1   host2       1000000       1.0",
		" 1.00-2.00 s       1   host2   host1             0       0.0",
	}, got)
	assert.Len(t, intervalLines(0, time.Second, prev, cur, false, "c", "s"), 2, "one direction: a line per stream")
	assert.Len(t, strings.Fields(intervalHeader), len(strings.Fields(got[0]))-1, "a heading per column (the interval's is two words)")
}

// With -i the client reports each interval of the bandwidth test, a line
// per stream and direction under one heading, and no progress lines.
func TestClientIntervalsOverAPipe(t *testing.T) {
	client, server := pipePair(t, nil)
	go serveConn(server, nil)
	var intervals, progress bytes.Buffer
	opts := clientOptions{Bandwidth: true, Bidir: true, Duration: 300 * time.Millisecond, WriteSize: 4096, Client: "c", Server: "s",
		Interval: 50 * time.Millisecond, Intervals: &intervals, Progress: &progress, ProgressEvery: time.Millisecond}
	rep, err := runClient(context.Background(), []*benchConn{newBenchConn(client)}, opts)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(intervals.String(), "\n"), "a blank line before the heading")
	lines := strings.Split(strings.Trim(intervals.String(), "\n"), "\n")
	require.Greater(t, len(lines), 2, intervals.String())
	assert.Equal(t, intervalHeader, lines[0])
	var up uint64
	for i, l := range lines[1:] {
		f := strings.Fields(l)
		require.Len(t, f, 7, l)
		want := []string{"c", "s"}
		if i%2 == 1 {
			want = []string{"s", "c"}
		}
		assert.Equal(t, append([]string{"0"}, want...), f[2:5], l)
		if f[3] == "c" {
			n, err := strconv.ParseUint(f[5], 10, 64)
			require.NoError(t, err)
			up += n
		}
	}
	assert.LessOrEqual(t, up, rep.Bandwidth.Streams[0].Directions[0].Bytes, "the intervals' bytes are bytes sent")
	assert.Empty(t, progress.String(), "-i replaces the bandwidth test's progress lines")
}

// bench on the emulated hosts says what it measures first, then reports
// the intervals (-i), then the results.
func TestBenchHeaderFirst(t *testing.T) {
	needFUSEHosts(t)
	ctx := testContext(t)
	run := startHosts(ctx, t)
	var stdout, stderr bytes.Buffer
	require.NoError(t, bench(ctx, &stdout, &stderr, run, []string{"-bw", "-time", "300ms", "-i", "100ms", "-size", "64k"}))
	out := stdout.String()
	header := strings.Index(out, "tbstream bench: host1 → host2, FUSE fallback devices; every byte verified\n  stream 0: ")
	intervals := strings.Index(out, intervalHeader)
	results := strings.Index(out, "\nbandwidth: 1 stream, one direction, 0.3 s per stream and direction, writes of 64 KiB\n")
	assert.Zero(t, header, out)
	assert.Greater(t, intervals, header, out)
	assert.Greater(t, results, intervals, out)
	assert.Empty(t, stderr.String(), "the hosts ran already; -i replaces the progress lines")
}
