package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// readBufferSize is what one read(2) of a device may return at most: the
// FUSE fallback's largest READ (cuse.MaxFuseIO). Reading into a buffer this
// big keeps reads few; the data is verified in place.
const readBufferSize = 1 << 20

// resultGrace is how long a client whose write failed waits for the
// server's RSLT that explains it.
const resultGrace = 2 * time.Second

// benchConn is one open stream device, on the client or the server side.
type benchConn struct {
	rw io.ReadWriter
	r  *bufio.Reader
}

func newBenchConn(rw io.ReadWriter) *benchConn {
	return &benchConn{rw: rw, r: bufio.NewReaderSize(rw, readBufferSize)}
}

// readMessage reads one ping-pong message: what the buffered reader still
// holds, then the rest straight from the device in reads of the bytes
// missing, as a latency client does (ib_send_lat, an os.read of the
// message size). Through the buffered reader every read(2) would ask for
// readBufferSize, and a FUSE or CUSE read pins the user pages of the whole
// request whatever arrives: on the FUSE fallback, 256 pages per 4 KiB
// message.
func (c *benchConn) readMessage(msg []byte) error {
	n := 0
	if k := c.r.Buffered(); k > 0 {
		n, _ = c.r.Read(msg[:min(k, len(msg))]) // from the buffer only: no read(2)
	}
	_, err := io.ReadFull(c.rw, msg[n:])
	return err
}

// activity counts what a client moved, for the progress lines and the
// stall watchdog.
type activity struct {
	sent, received, rounds atomic.Uint64
}

func (a *activity) total() uint64 { return a.sent.Load() + a.received.Load() + a.rounds.Load() }

// streamActivity counts what a client moved on one stream, for -i.
type streamActivity struct{ sent, received atomic.Uint64 }

// streamCount is a streamActivity read at one time.
type streamCount struct{ sent, received uint64 }

func countStreams(per []streamActivity) []streamCount {
	c := make([]streamCount, len(per))
	for i := range per {
		c[i] = streamCount{per[i].sent.Load(), per[i].received.Load()}
	}
	return c
}

// intervalHeader heads -i's lines.
const intervalHeader = "    INTERVAL  STREAM    FROM      TO         BYTES      MB/s"

// intervalLines are -i's report of the interval from..to of a bandwidth
// test (since its start): a line per stream and direction with the
// bytes the client sent (received, from the server, with bidir) in it.
func intervalLines(from, to time.Duration, prev, cur []streamCount, bidir bool, client, server string) []string {
	var lines []string
	span := fmt.Sprintf("%.2f-%.2f s", from.Seconds(), to.Seconds())
	line := func(i int, src, dst string, n uint64) {
		lines = append(lines, fmt.Sprintf("%12s  %6d  %6s  %6s  %12d  %8.1f", span, i, src, dst, n, mbps(n, to-from)))
	}
	for i := range cur {
		line(i, client, server, cur[i].sent-prev[i].sent)
		if bidir {
			line(i, server, client, cur[i].received-prev[i].received)
		}
	}
	return lines
}

// ---- server ----

// serverTest is what the server reports about one test it ran.
type serverTest struct {
	Mode   string  `json:"mode"`
	Bidir  bool    `json:"bidir,omitempty"`
	Result *result `json:"-"`
	// For the JSON line of -serve -json.
	RxBytes   uint64  `json:"rx_bytes"`
	RxSeconds float64 `json:"rx_seconds"`
	RxMBps    float64 `json:"rx_mb_per_s"`
	TxBytes   uint64  `json:"tx_bytes,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// serveConn runs the tests a client asks for on one open device, one after
// the other, until the client closes the session (EOF, a nil error). A
// test that fails ends the session: its error is sent to the client in
// RSLT and returned.
func serveConn(rw io.ReadWriter, report func(serverTest)) error {
	c := newBenchConn(rw)
	for {
		body, err := readControl(c.r, tagHello)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("waiting for a test: %w", err)
		}
		h, err := unmarshalHello(body)
		if err != nil {
			_, werr := rw.Write(readyMessage(err))
			return errors.Join(fmt.Errorf("refused a test: %w", err), werr)
		}
		if _, err := rw.Write(readyMessage(nil)); err != nil {
			return fmt.Errorf("accept the %v test: %w", h.Mode, err)
		}
		var res result
		if h.Mode == modeBandwidth {
			err = c.serveBandwidth(h, &res)
		} else {
			err = c.serveLatency(h, &res)
		}
		if err != nil {
			res.Err = err.Error()
		}
		if report != nil {
			report(serverTest{Mode: h.Mode.String(), Bidir: h.Bidir, Result: &res, RxBytes: res.RxBytes, RxSeconds: res.RxTime.Seconds(),
				RxMBps: mbps(res.RxBytes, res.RxTime), TxBytes: res.TxBytes, Error: res.Err})
		}
		if _, werr := rw.Write(res.marshal()); werr != nil {
			return errors.Join(err, fmt.Errorf("send the result: %w", werr))
		}
		if err != nil {
			return err
		}
	}
}

// serveBandwidth verifies the client's data and, with -bidir, sends its
// own at the same time. On an error the sender stops between two writes,
// so that the RSLT that follows is not in the middle of a DATA message.
func (c *benchConn) serveBandwidth(h *hello, res *result) error {
	start := time.Now()
	var (
		abort   atomic.Bool
		sendErr error
		wg      sync.WaitGroup
	)
	if h.Bidir {
		s := newDataSender(c.rw, int(h.WriteSize), h.SeedDown, nil)
		s.abort = &abort
		wg.Go(func() {
			res.TxTime, sendErr = s.run(h.Bytes, h.Duration)
			res.TxBytes = s.sent
		})
	}
	rx, err := receiveData(c.r, h.SeedUp, nil)
	res.RxBytes, res.RxTime = rx, time.Since(start)
	if err != nil {
		abort.Store(true)
		err = fmt.Errorf("client → server: %w", err)
	}
	wg.Wait()
	if sendErr != nil {
		sendErr = fmt.Errorf("server → client: %w", sendErr)
	}
	return errors.Join(err, sendErr)
}

// serveLatency echoes each message as soon as it is complete and verifies
// it after the echo is on its way, off the client's round trip. It goes on
// echoing after a wrong message (the client, which verifies the echo,
// stops there) and reports the first.
func (c *benchConn) serveLatency(h *hello, res *result) error {
	largest := uint32(0)
	for _, s := range h.Sizes {
		largest = max(largest, s.Size)
	}
	buf := make([]byte, largest)
	var off uint64
	var first error
	start := time.Now()
	for _, s := range h.Sizes {
		msg := buf[:s.Size]
		for range s.Warmup + s.Rounds {
			if err := c.readMessage(msg); err != nil {
				return errors.Join(first, fmt.Errorf("read a %d-byte message at offset %d: %w", s.Size, off, eofIsUnexpected(err)))
			}
			if _, err := c.rw.Write(msg); err != nil {
				return errors.Join(first, fmt.Errorf("echo a %d-byte message at offset %d: %w", s.Size, off, err))
			}
			if first == nil {
				first = verifyAt(msg, off, h.SeedUp)
			}
			off += uint64(s.Size)
			res.RxBytes = off
		}
	}
	res.RxTime = time.Since(start)
	if first != nil {
		return fmt.Errorf("client → server: %w", first)
	}
	return nil
}

// verifyAt checks that b is the pattern of seed at data offset off.
func verifyAt(b []byte, off, seed uint64) error {
	c := newChecker(seed, off)
	if err := c.feed(b); err != nil {
		return err
	}
	return c.finish(off + uint64(len(b)))
}

// ---- client ----

// clientOptions are the tests a client runs.
type clientOptions struct {
	Bandwidth, Latency bool
	Bidir              bool
	Duration           time.Duration
	Bytes              uint64 // per stream and direction; 0: Duration
	WriteSize          int
	Sizes              []int
	Rounds             int // per size; 0: defaultRounds
	// Names of the two sides in the report ("host1", "host2").
	Client, Server string
	// Progress receives a line every ProgressEvery (none when nil).
	Progress      io.Writer
	ProgressEvery time.Duration
	// Interval (when positive) has the bandwidth test write its report
	// of each Interval to Intervals (intervalLines) instead of progress
	// lines.
	Interval  time.Duration
	Intervals io.Writer
	// Stall fails the run when nothing moved for that long (0: never).
	Stall time.Duration
	// Begin, when set, is called with the run's client, server and
	// devices before the first test starts.
	Begin func(*benchReport)
}

// defaultRounds gives small messages 1000 round trips and big ones fewer,
// about 64 MiB each way in all, but at least 50.
func defaultRounds(size int) int {
	return min(1000, max(50, (64<<20)/size))
}

func warmupRounds(rounds int) int { return max(3, rounds/10) }

// runClient runs the tests of opts on conns (one per stream; the latency
// test on the first) and reports them.
func runClient(ctx context.Context, conns []*benchConn, opts clientOptions) (*benchReport, error) {
	rep := &benchReport{Client: opts.Client, Server: opts.Server}
	act := &activity{}
	if opts.Bandwidth {
		var err error
		h := &hello{Mode: modeBandwidth, Bidir: opts.Bidir, WriteSize: uint32(opts.WriteSize), Bytes: opts.Bytes, Duration: opts.Duration}
		if err := h.validate(); err != nil {
			return nil, err
		}
		start := time.Now()
		phase := func() string {
			secs := time.Since(start).Seconds()
			s := fmt.Sprintf("bandwidth: %.1f s, %d MB sent", secs, act.sent.Load()/1e6)
			if opts.Bidir {
				s += fmt.Sprintf(", %d MB received", act.received.Load()/1e6)
			}
			return s
		}
		per := make([]streamActivity, len(conns))
		report := opts.progressLines(phase)
		if opts.Interval > 0 && opts.Intervals != nil {
			prev, from := countStreams(per), time.Duration(0)
			report = progress{every: opts.Interval, print: func(final bool) {
				cur, to := countStreams(per), time.Since(start)
				moved := false
				for i := range cur {
					moved = moved || cur[i] != prev[i]
				}
				// The last interval ends with the test: one shorter than
				// a tenth of the others is left out.
				if final && (!moved || to-from < opts.Interval/10) {
					return
				}
				if from == 0 {
					fmt.Fprintf(opts.Intervals, "\n%s\n", intervalHeader)
				}
				for _, l := range intervalLines(from, to, prev, cur, opts.Bidir, opts.Client, opts.Server) {
					fmt.Fprintln(opts.Intervals, l)
				}
				prev, from = cur, to
			}}
		}
		err = watch(ctx, act, opts, phase, report, func() error {
			rep.Bandwidth, err = runBandwidth(conns, h, act, per, opts)
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("bandwidth: %w", err)
		}
	}
	if opts.Latency {
		h := &hello{Mode: modeLatency, SeedUp: rand.Uint64()}
		for _, size := range opts.Sizes {
			rounds := opts.Rounds
			if rounds <= 0 {
				rounds = defaultRounds(size)
			}
			h.Sizes = append(h.Sizes, latencySize{Size: uint32(size), Warmup: uint32(warmupRounds(rounds)), Rounds: uint32(rounds)})
		}
		if err := h.validate(); err != nil {
			return nil, err
		}
		var current atomic.Pointer[latencySize]
		phase := func() string {
			s := current.Load()
			if s == nil {
				return "latency: starting"
			}
			return fmt.Sprintf("latency: %d-byte messages, %d round trips done in all", s.Size, act.rounds.Load())
		}
		var err error
		err = watch(ctx, act, opts, phase, opts.progressLines(phase), func() error {
			rep.Latency, err = conns[0].latency(h, act, &current)
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("latency: %w", err)
		}
		rep.Latency.Client, rep.Latency.Server = opts.Client, opts.Server
	}
	return rep, nil
}

// progress is what watch prints while a test runs: print every every
// (nothing when every is 0), and with final at the end of a test that
// succeeded.
type progress struct {
	every time.Duration
	print func(final bool)
}

// progressLines prints phase() every ProgressEvery to opts.Progress.
func (opts clientOptions) progressLines(phase func() string) progress {
	if opts.Progress == nil || opts.ProgressEvery <= 0 {
		return progress{}
	}
	return progress{every: opts.ProgressEvery, print: func(final bool) {
		if !final {
			fmt.Fprintln(opts.Progress, phase())
		}
	}}
}

// watch runs fn, printing progress (report) and failing when nothing
// moves for opts.Stall or ctx ends. It then returns without waiting for
// fn: a read or write of a device cannot be interrupted, and what blocks
// in one is released when the device goes away (the process ends, or the
// emulated mode removes the streams).
func watch(ctx context.Context, act *activity, opts clientOptions, phase func() string, report progress, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var reports <-chan time.Time
	if report.every > 0 {
		t := time.NewTicker(report.every)
		defer t.Stop()
		reports = t.C
	}
	lastMove, lastTotal := time.Now(), act.total()
	for {
		select {
		case err := <-done:
			if err == nil && report.print != nil {
				report.print(true)
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-reports:
			report.print(false)
		case now := <-tick.C:
			if t := act.total(); t != lastTotal {
				lastTotal, lastMove = t, now
			} else if opts.Stall > 0 && now.Sub(lastMove) >= opts.Stall {
				return fmt.Errorf("nothing moved for %v (%s): the peer stopped, or data was lost", opts.Stall, phase())
			}
		}
	}
}

// runBandwidth runs one bandwidth test on every stream at once; per
// counts each stream's bytes.
func runBandwidth(conns []*benchConn, h *hello, act *activity, per []streamActivity, opts clientOptions) (*bandwidthReport, error) {
	rep := &bandwidthReport{Bidir: h.Bidir, WriteSize: int(h.WriteSize), Bytes: h.Bytes, Seconds: h.Duration.Seconds()}
	rep.Streams = make([]streamReport, len(conns))
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		hi := *h
		hi.SeedUp, hi.SeedDown = rand.Uint64(), rand.Uint64()
		wg.Go(func() {
			rep.Streams[i], errs[i] = c.bandwidth(&hi, act, &per[i], opts)
			rep.Streams[i].Stream = i
			if errs[i] != nil && len(conns) > 1 {
				errs[i] = fmt.Errorf("stream %d: %w", i, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	rep.sum(opts)
	return rep, nil
}

// bandwidth runs one bandwidth test on c. The client reads all the time,
// not only with -bidir: a server that fails sends its RSLT at once and
// closes, and only a reader sees that (it also makes a write blocked on
// the closed stream fail instead of waiting forever).
func (c *benchConn) bandwidth(h *hello, act *activity, per *streamActivity, opts clientOptions) (streamReport, error) {
	var rep streamReport
	if _, err := c.rw.Write(h.marshal()); err != nil {
		return rep, fmt.Errorf("send the test: %w", err)
	}
	body, err := readControl(c.r, tagReady)
	if err != nil {
		return rep, fmt.Errorf("waiting for the server to accept the test (is tbstream bench -serve running on the other side?): %w", eofIsUnexpected(err))
	}
	if err := parseReady(body); err != nil {
		return rep, err
	}
	start := time.Now()
	type readOutcome struct {
		res      *result
		down     uint64
		downTime time.Duration
		err      error
	}
	readDone := make(chan readOutcome, 1)
	go func() {
		var o readOutcome
		if h.Bidir {
			o.down, o.err = receiveData(c.r, h.SeedDown, func(n int) {
				act.received.Add(uint64(n))
				per.received.Add(uint64(n))
			})
			o.downTime = time.Since(start)
			if o.err != nil {
				o.err = fmt.Errorf("%s → %s: %w", opts.Server, opts.Client, o.err)
			}
		}
		if o.err == nil {
			o.res, o.err = readResult(c.r)
		}
		readDone <- o
	}()
	// The writer reports through the channel only: on an error this
	// function returns without waiting for it.
	type writeOutcome struct {
		sent uint64
		err  error
	}
	writeDone := make(chan writeOutcome, 1)
	go func() {
		s := newDataSender(c.rw, int(h.WriteSize), h.SeedUp, func(n int) {
			act.sent.Add(uint64(n))
			per.sent.Add(uint64(n))
		})
		_, err := s.run(h.Bytes, h.Duration)
		writeDone <- writeOutcome{s.sent, err}
	}()
	var o readOutcome
	var w writeOutcome
	select {
	case o = <-readDone:
		if o.err != nil {
			return rep, o.err
		}
		w = <-writeDone
	case w = <-writeDone:
		if w.err == nil {
			o = <-readDone
		}
	}
	if w.err != nil {
		err := fmt.Errorf("%s → %s: %w", opts.Client, opts.Server, w.err)
		// A server that failed closes its end, which fails the write;
		// its RSLT, just read or about to be, says why.
		select {
		case o = <-readDone:
			if o.err != nil {
				err = errors.Join(o.err, err)
			}
		case <-time.After(resultGrace):
		}
		return rep, err
	}
	if o.err != nil {
		return rep, o.err
	}
	if o.res.RxBytes != w.sent {
		return rep, fmt.Errorf("%s → %s: the server verified %d bytes of %d sent", opts.Client, opts.Server, o.res.RxBytes, w.sent)
	}
	rep.Directions = append(rep.Directions, directionReport{From: opts.Client, To: opts.Server, Bytes: o.res.RxBytes,
		Seconds: o.res.RxTime.Seconds(), MBps: mbps(o.res.RxBytes, o.res.RxTime)})
	if h.Bidir {
		if o.down != o.res.TxBytes {
			return rep, fmt.Errorf("%s → %s: received %d bytes, the server sent %d", opts.Server, opts.Client, o.down, o.res.TxBytes)
		}
		rep.Directions = append(rep.Directions, directionReport{From: opts.Server, To: opts.Client, Bytes: o.down,
			Seconds: o.downTime.Seconds(), MBps: mbps(o.down, o.downTime)})
	}
	return rep, nil
}

// serverError is a failure the server reported in RSLT.
type serverError struct{ text string }

func (e *serverError) Error() string { return "the server found: " + e.text }

// readResult reads the RSLT that ends a test.
func readResult(r *bufio.Reader) (*result, error) {
	body, err := readControl(r, tagResult)
	if err != nil {
		return nil, fmt.Errorf("waiting for the server's result: %w", eofIsUnexpected(err))
	}
	res, err := unmarshalResult(body)
	if err != nil {
		return nil, err
	}
	if res.Err != "" {
		return nil, &serverError{res.Err}
	}
	return res, nil
}

// latency runs the ping-pong: for each size, warm-up and measured round
// trips of one message, each echo verified.
func (c *benchConn) latency(h *hello, act *activity, current *atomic.Pointer[latencySize]) (*latencyReport, error) {
	if _, err := c.rw.Write(h.marshal()); err != nil {
		return nil, fmt.Errorf("send the test: %w", err)
	}
	body, err := readControl(c.r, tagReady)
	if err != nil {
		return nil, fmt.Errorf("waiting for the server to accept the test (is tbstream bench -serve running on the other side?): %w", eofIsUnexpected(err))
	}
	if err := parseReady(body); err != nil {
		return nil, err
	}
	largest := 0
	for _, s := range h.Sizes {
		largest = max(largest, int(s.Size))
	}
	out, in := make([]byte, largest), make([]byte, largest)
	rep := &latencyReport{}
	var off uint64
	for _, s := range h.Sizes {
		current.Store(&s)
		size := int(s.Size)
		rtts := make([]time.Duration, 0, s.Rounds)
		for i := range int(s.Warmup + s.Rounds) {
			fillPattern(out[:size], off, h.SeedUp)
			t0 := time.Now()
			if _, err := c.rw.Write(out[:size]); err != nil {
				return nil, fmt.Errorf("write a %d-byte message: %w", size, err)
			}
			if err := c.readMessage(in[:size]); err != nil {
				return nil, fmt.Errorf("read the echo of a %d-byte message: %w", size, eofIsUnexpected(err))
			}
			rtt := time.Since(t0)
			if err := verifyAt(in[:size], off, h.SeedUp); err != nil {
				return nil, fmt.Errorf("echo of a %d-byte message: %w", size, err)
			}
			if i >= int(s.Warmup) {
				rtts = append(rtts, rtt)
			}
			off += uint64(size)
			act.rounds.Add(1)
		}
		rep.Sizes = append(rep.Sizes, summarize(size, int(s.Warmup), rtts))
	}
	if _, err := readResult(c.r); err != nil {
		return nil, err
	}
	return rep, nil
}

// ---- statistics ----

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest sample with at least p % of the
// samples at or below it. Integer arithmetic keeps p99 of 100 samples
// the 99th, where float rounding could make it the 100th.
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100
	return sorted[min(max(rank, 1), n)-1]
}

func summarize(size, warmup int, rtts []time.Duration) latencySizeReport {
	sorted := slices.Clone(rtts)
	slices.Sort(sorted)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return latencySizeReport{
		Size: size, Rounds: len(rtts), Warmup: warmup,
		MinUs: us(percentile(sorted, 0)), P50Us: us(percentile(sorted, 50)),
		P99Us: us(percentile(sorted, 99)), MaxUs: us(percentile(sorted, 100)),
	}
}

// mbps is 10^6 bytes per second.
func mbps(bytes uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() / 1e6
}
