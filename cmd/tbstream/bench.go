package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"tbstream/cmd/internal/daemon"
	"tbstream/nhi"
)

// benchFlags are the command's flags.
type benchFlags struct {
	bw, lat, bidir, json bool
	streams              int
	duration             time.Duration
	bytes, size          string
	sizes                string
	rounds               int
	attrs                itemAttrs
	serve, connect       string
	stall                time.Duration
	interval             time.Duration
}

// benchFlagSet defines bench's flags on fs.
func benchFlagSet(fs *flag.FlagSet, f *benchFlags) {
	fs.BoolVar(&f.bw, "bw", false, "the bandwidth test")
	fs.BoolVar(&f.lat, "lat", false, "the latency test: a ping-pong on the first stream")
	fs.IntVar(&f.streams, "streams", 1, "`N` streams at once for -bw (emulated hosts; with -connect, one per PATH)")
	fs.BoolVar(&f.bidir, "bidir", false, "-bw in both directions at once")
	fs.DurationVar(&f.duration, "time", 3*time.Second, "-bw: each direction sends for `D`")
	fs.StringVar(&f.bytes, "bytes", "", "-bw: each direction sends `N` bytes per stream instead (64k, 1G...)")
	fs.StringVar(&f.size, "size", "256k", "-bw: bytes per write(2), `N`, its 8-byte message header included")
	fs.StringVar(&f.sizes, "sizes", "64,4096,65536,1048576", "-lat: the message sizes, a `LIST`")
	fs.IntVar(&f.rounds, "rounds", 0, "-lat: `N` round trips per size after a warm-up of a tenth (default: 1000, fewer above 64 KiB: about 64 MiB each way, at least 50)")
	fs.DurationVar(&f.interval, "i", 0, "-bw: report each interval `D` per stream and direction, as iperf3 does (0: a progress line every 2 s on standard error)")
	fs.IntVar(&f.attrs.ring, "ring", 0, "ring_size `N` of the streams made on the emulated hosts (default: the driver's)")
	fs.IntVar(&f.attrs.throttling, "throttling", -1, "throttling `NS` of those streams, written with ring_size before the HopIDs (-1: the driver's)")
	fs.BoolVar(&f.attrs.busyPoll, "busy-poll", false, "busy_poll on those streams: readers and writers spin on the rings instead of sleeping on interrupts")
	fs.StringVar(&f.serve, "serve", "", "serve the tests clients ask for on these devices, `PATH`[,PATH...]")
	fs.StringVar(&f.connect, "connect", "", "run the tests against a server on the other end of these devices, `PATH`[,PATH...]")
	fs.BoolVar(&f.json, "json", false, "one JSON document on standard output (-serve: a JSON line per test)")
	fs.DurationVar(&f.stall, "stall", 30*time.Second, "fail when nothing moved for `D` (0: wait forever)")
}

// parseBenchFlags reads bench's command line: flag.ErrHelp for -h, a
// usage error for a command line refused.
func parseBenchFlags(args []string) (*benchFlags, error) {
	f := &benchFlags{}
	fs := newFlags("bench")
	benchFlagSet(fs, f)
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	if f.serve != "" && f.connect != "" {
		return nil, usageErrorf("-serve and -connect exclude each other")
	}
	if f.streams < 1 || f.streams > 64 {
		return nil, usageErrorf("-streams %d: want 1 to 64", f.streams)
	}
	if f.attrs.ring != 0 && (f.attrs.ring < 32 || f.attrs.ring > 4096) {
		return nil, usageErrorf("-ring %d: want 32 to 4096", f.attrs.ring)
	}
	if f.attrs.throttling > nhi.MaxThrottlingNs {
		return nil, usageErrorf("-throttling %d: want 0 to %d", f.attrs.throttling, nhi.MaxThrottlingNs)
	}
	if f.interval < 0 {
		return nil, usageErrorf("-i %v: want a positive interval (0: none)", f.interval)
	}
	if !f.bw && !f.lat {
		f.bw, f.lat = true, true
	}
	return f, nil
}

// clientOptions turns the flags into a client's tests.
func (f *benchFlags) clientOptions(stdout, stderr io.Writer) (clientOptions, error) {
	opts := clientOptions{Bandwidth: f.bw, Latency: f.lat, Bidir: f.bidir, Duration: f.duration, Rounds: f.rounds,
		Progress: stderr, ProgressEvery: 2 * time.Second, Stall: f.stall, Interval: f.interval, Intervals: stdout}
	if f.json {
		opts.Intervals = stderr
	}
	size, err := parseSize(f.size)
	if err != nil {
		return opts, usageErrorf("-size: %w", err)
	}
	opts.WriteSize = int(size)
	if f.bytes != "" {
		if opts.Bytes, err = parseSize(f.bytes); err != nil || opts.Bytes == 0 {
			return opts, usageErrorf("-bytes %q: want a positive size", f.bytes)
		}
	}
	for _, s := range strings.Split(f.sizes, ",") {
		n, err := parseSize(strings.TrimSpace(s))
		if err != nil || n == 0 || n > maxMessageSize {
			return opts, usageErrorf("-sizes: %q: want 1 to %d bytes", s, maxMessageSize)
		}
		opts.Sizes = append(opts.Sizes, int(n))
	}
	if f.rounds < 0 {
		return opts, usageErrorf("-rounds %d: want 0 or more", f.rounds)
	}
	return opts, nil
}

// parseSize reads a byte count with an optional binary suffix: 4096, 64k,
// 256KiB, 1M, 1G.
func parseSize(s string) (uint64, error) {
	num := strings.TrimRight(s, "kKmMgGiIbB")
	mult := uint64(1)
	switch strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(s[len(num):], "B"), "b")) {
	case "":
	case "k", "ki":
		mult = 1 << 10
	case "m", "mi":
		mult = 1 << 20
	case "g", "gi":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("size %q: unknown suffix", s)
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	if n > (1<<63)/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// sizeText writes n in the largest binary unit that divides it.
func sizeText(n uint64) string {
	for _, u := range []struct {
		size uint64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// bench is the command: the emulated hosts by default, or one side of a
// test between any two devices. The client says what it measures before
// it starts (opts.Begin), then the results.
func bench(ctx context.Context, stdout, stderr io.Writer, run string, args []string) error {
	f, err := parseBenchFlags(args)
	if err != nil {
		return err
	}
	if f.serve != "" {
		return serveDevices(ctx, stdout, strings.Split(f.serve, ","), f.json)
	}
	opts, err := f.clientOptions(stdout, stderr)
	if err != nil {
		return err
	}
	if !f.json {
		opts.Begin = func(r *benchReport) { r.printHeader(stdout) }
	}
	var rep *benchReport
	if f.connect != "" {
		rep, err = connectDevices(ctx, strings.Split(f.connect, ","), opts)
	} else {
		if err := needRoot("bench on the emulated hosts", "it starts them and makes streams; -serve and -connect do not"); err != nil {
			return err
		}
		var reports []upReport
		if reports, err = up(ctx, run, cableShm); err != nil {
			return err
		}
		for _, r := range reports {
			if r.started {
				fmt.Fprintln(stderr, r)
			}
		}
		rep, err = benchHosts(ctx, run, f.streams, f.attrs, opts)
	}
	if rep == nil {
		return err
	}
	if f.json {
		if err != nil {
			rep.Error = err.Error()
		}
		rep.writeJSON(stdout)
	} else if err == nil || rep.Bandwidth != nil || rep.Latency != nil {
		rep.printResults(stdout)
	}
	return err
}

// ---- the two roles on devices given by path ----

// openDevice opens a stream device in blocking mode, as a C or Python
// client would: os.OpenFile would hand a pollable file to Go's netpoller,
// and every read that finds nothing would then cost an EAGAIN, a poll
// notification and a second read, three trips through the device server
// where a blocking read(2) takes one (and a process that serves the
// fallback itself, as the tests do, must not poll its own files). Reads
// and writes then block in the kernel outside Go's poller: for a FUSE
// fallback device the process takes the Ps the daemons take
// (daemon.RaiseProcs).
func openDevice(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open stream device: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		daemon.RaiseProcs()
	}
	return f, nil
}

// connectDevices is the client against a server on the other end of each
// path.
func connectDevices(ctx context.Context, paths []string, opts clientOptions) (*benchReport, error) {
	var conns []*benchConn
	for _, p := range paths {
		f, err := openDevice(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		conns = append(conns, newBenchConn(f))
	}
	if opts.Client == "" {
		opts.Client, opts.Server = "client", "server"
	}
	id := benchReport{Client: opts.Client, Server: opts.Server, ClientDevices: paths}
	if opts.Begin != nil {
		opts.Begin(&id)
	}
	rep, err := runClient(ctx, conns, opts)
	if rep != nil {
		rep.ClientDevices, rep.ServerDevices = paths, nil
	}
	return rep, err
}

// serveDevices serves clients on every path until ctx ends. A session
// ends when its client closes the device (or fails); the device is then
// closed and opened again for the next client, because a stream whose
// peer closed reads EOF and refuses writes until it is opened anew.
func serveDevices(ctx context.Context, stdout io.Writer, paths []string, asJSON bool) error {
	var mu sync.Mutex
	say := func(path string, t serverTest) {
		mu.Lock()
		defer mu.Unlock()
		if asJSON {
			line := struct {
				Device string `json:"device"`
				serverTest
			}{path, t}
			json.NewEncoder(stdout).Encode(line)
			return
		}
		what := t.Mode
		if t.Bidir {
			what += " (both directions)"
		}
		if t.Mode == modeLatency.String() {
			fmt.Fprintf(stdout, "%s: %s test: %d bytes from the client echoed and verified in %.2f s", path, what, t.RxBytes, t.RxSeconds)
		} else {
			fmt.Fprintf(stdout, "%s: %s test: %d bytes from the client verified in %.2f s (%.1f MB/s)", path, what, t.RxBytes, t.RxSeconds, t.RxMBps)
		}
		if t.TxBytes > 0 {
			fmt.Fprintf(stdout, ", %d bytes sent", t.TxBytes)
		}
		if t.Error != "" {
			fmt.Fprintf(stdout, "; FAILED: %s", t.Error)
		}
		fmt.Fprintln(stdout)
	}
	errs := make(chan error, len(paths))
	for _, p := range paths {
		go func() {
			for ctx.Err() == nil {
				f, err := openDevice(p)
				if err != nil {
					errs <- err
					return
				}
				if !asJSON {
					fmt.Fprintf(stdout, "%s: waiting for a client\n", p)
				}
				if err := serveConn(f, func(t serverTest) { say(p, t) }); err != nil {
					fmt.Fprintf(stdout, "%s: session ended: %v\n", p, err)
				}
				f.Close()
			}
			errs <- nil
		}()
	}
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		return nil
	}
}

// ---- the emulated hosts ----

// The streams of the emulated mode: host1 is the client, host2 the
// server, joined as in the kernel documentation (host2 sees host1 as
// 0-1, host1 sees host2 as 0-503).
const (
	clientHost, clientGroup = "host1", "0-503.0"
	serverHost, serverGroup = "host2", "0-1.0"
)

// emuStream is one stream made for a run on both hosts.
type emuStream struct {
	name                     string
	clientPath, serverPath   string // the devices
	clientItem, serverItem   string // the configfs items
	clientIndex, serverIndex int
}

// streamSetup makes and removes the streams of a run.
type streamSetup struct {
	run     string
	streams []*emuStream
	// items and groups made for the run, removed with it (groups when
	// no other stream is in them).
	items, groups []string
}

func configStreamDir(run, host string) string {
	return filepath.Join(daemon.ConfigDir(hostDir(run, host)), "thunderbolt", "stream")
}

// setupStreams makes n streams as the documentation does: on host2 with
// automatic HopIDs, on host1 by name only, taking host2's announcement.
// The names are random, so that a run never meets a stream of another.
func setupStreams(ctx context.Context, run string, n int, attrs itemAttrs) (*streamSetup, error) {
	s := &streamSetup{run: run}
	devDirs := map[string]string{}
	for _, host := range []string{clientHost, serverHost} {
		st, err := daemon.ReadStatus(hostDir(run, host))
		if err != nil {
			return s, fmt.Errorf("host %s is not running: %w", host, err)
		}
		devDirs[host] = st.DeviceDir
	}
	tag := fmt.Sprintf("b%04x", rand.IntN(1<<16))
	for i := range n {
		es := &emuStream{name: tag + strconv.Itoa(i)}
		var err error
		if es.serverItem, err = s.makeItem(serverHost, serverGroup, es.name, attrs); err != nil {
			return s, err
		}
		for _, attr := range []string{"in_hopid", "out_hopid"} {
			if err := writeAttr(es.serverItem, attr, "-1"); err != nil {
				return s, err
			}
		}
		if es.clientItem, err = s.makeItem(clientHost, clientGroup, es.name, attrs); err != nil {
			return s, err
		}
		s.streams = append(s.streams, es)
	}
	for _, es := range s.streams {
		if err := s.waitClientHopIDs(ctx, es.clientItem, attrs); err != nil {
			return s, fmt.Errorf("%s: %w", clientHost, err)
		}
		var err error
		if es.clientIndex, err = readAttr(es.clientItem, "index"); err != nil {
			return s, err
		}
		if es.serverIndex, err = readAttr(es.serverItem, "index"); err != nil {
			return s, err
		}
		es.clientPath = filepath.Join(devDirs[clientHost], "tbstream"+strconv.Itoa(es.clientIndex))
		es.serverPath = filepath.Join(devDirs[serverHost], "tbstream"+strconv.Itoa(es.serverIndex))
	}
	return s, nil
}

// itemAttrs are the attributes written to each stream before its HopIDs
// (zero ring, negative throttling: the driver's default).
type itemAttrs struct {
	ring, throttling int
	busyPoll         bool
}

func (a itemAttrs) write(item string) error {
	if a.ring > 0 {
		if err := writeAttr(item, "ring_size", strconv.Itoa(a.ring)); err != nil {
			return err
		}
	}
	if a.throttling >= 0 {
		if err := writeAttr(item, "throttling", strconv.Itoa(a.throttling)); err != nil {
			return err
		}
	}
	if a.busyPoll {
		return writeAttr(item, "busy_poll", "1")
	}
	return nil
}

// makeItem is mkdir of host's group (if needed) and of the stream, and
// its attributes.
func (s *streamSetup) makeItem(host, group, name string, attrs itemAttrs) (string, error) {
	dir := filepath.Join(configStreamDir(s.run, host), group)
	if err := os.Mkdir(dir, 0o755); err == nil {
		s.groups = append(s.groups, dir)
	} else if !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("%s: %w", host, err)
	}
	item := filepath.Join(dir, name)
	if err := os.Mkdir(item, 0o755); err != nil {
		return "", fmt.Errorf("%s: %w", host, err)
	}
	s.items = append(s.items, item)
	return item, attrs.write(item)
}

// remove is rmdir of every item and group the run made (again, it does
// nothing). Open handles of the devices then read EOF and fail writes,
// which ends whatever still waits in a read or write.
func (s *streamSetup) remove() error {
	var errs []error
	for i := len(s.items) - 1; i >= 0; i-- {
		if err := os.Remove(s.items[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove stream: %w", err))
		}
	}
	s.items = nil
	for _, g := range s.groups {
		if err := os.Remove(g); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("remove group: %w", err))
		}
	}
	s.groups = nil
	return errors.Join(errs...)
}

func writeAttr(item, attr, value string) error {
	if err := os.WriteFile(filepath.Join(item, attr), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("echo %s > %s: %w", value, attr, err)
	}
	return nil
}

func readAttr(item, attr string) (int, error) {
	b, err := os.ReadFile(filepath.Join(item, attr))
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(item, attr), err)
	}
	return n, nil
}

// Waiting for host1's HopIDs: announcements arrive 50–100 ms after host2's
// echo, so a stream still without them after hopIDPatience is made again,
// up to hopIDAttempts times.
const (
	hopIDPatience = time.Second
	hopIDAttempts = 20
)

// waitClientHopIDs waits until host1's item has both HopIDs, from host2's
// announcement. An attach takes both or neither, once: when host1 still
// holds a HopID of a stream removed a moment ago (its last close is
// flushing) and host2 has already given that HopID to the new stream,
// the new stream stays without HopIDs. Making the item again attaches it
// again, by when the old stream has let go.
func (s *streamSetup) waitClientHopIDs(ctx context.Context, item string, attrs itemAttrs) error {
	for attempt := 1; ; attempt++ {
		deadline := time.Now().Add(hopIDPatience)
		for {
			in, err1 := readAttr(item, "in_hopid")
			out, err2 := readAttr(item, "out_hopid")
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if in > 0 && out > 0 {
				return nil
			}
			if time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		if attempt == hopIDAttempts {
			return fmt.Errorf("%s got no HopIDs from the peer's announcement in %d attempts", item, attempt)
		}
		if err := os.Remove(item); err != nil {
			return fmt.Errorf("make %s again: %w", item, err)
		}
		if err := os.Mkdir(item, 0o755); err != nil {
			return fmt.Errorf("make %s again: %w", item, err)
		}
		if err := attrs.write(item); err != nil {
			return err
		}
	}
}

// serverGrace is how long the end of a run waits for the in-process
// servers to see their streams removed.
const serverGrace = 5 * time.Second

// benchHosts runs the client on host1's devices and the server on
// host2's, in this process, over n new streams, and removes the streams
// at the end.
//
// The streams are removed while the devices are still open, and closed
// after: the daemon then releases each stream at its last close, after
// the rings have stopped. Removing a stream right after close(2) instead
// races with that release (close of a FUSE file returns before the
// daemon's release has run, and a last close whose CLOSE frame cannot
// leave because the peer closed first flushes for 500 ms): a stream
// removed in that window leaves its rings and DMA paths behind while its
// HopIDs are reused, and the next stream given those HopIDs cannot be
// opened (EIO, "HopID already routed").
func benchHosts(ctx context.Context, run string, n int, attrs itemAttrs, opts clientOptions) (rep *benchReport, err error) {
	var clientFiles, serverFiles []*os.File
	setup, err := setupStreams(ctx, run, n, attrs)
	defer func() {
		if rerr := setup.remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		// The client first: its CLOSE frame finds the server's rings
		// still running, so host1 lets go of the HopIDs at once.
		for _, f := range slices.Concat(clientFiles, serverFiles) {
			f.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	opts.Client, opts.Server = clientHost, serverHost
	// The server opens first: its rings must be running when the
	// client's first message arrives.
	serverDone := make(chan error, len(setup.streams))
	for _, es := range setup.streams {
		f, err := openDevice(es.serverPath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", serverHost, err)
		}
		serverFiles = append(serverFiles, f)
		go func() { serverDone <- serveConn(f, nil) }()
	}
	var conns []*benchConn
	for _, es := range setup.streams {
		f, err := openDevice(es.clientPath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", clientHost, err)
		}
		clientFiles = append(clientFiles, f)
		conns = append(conns, newBenchConn(f))
	}
	id := benchReport{Client: clientHost, Server: serverHost}
	st, _ := daemon.ReadStatus(hostDir(run, clientHost))
	id.Devices = st.Devices
	for _, es := range setup.streams {
		id.ClientDevices = append(id.ClientDevices, es.clientPath)
		id.ServerDevices = append(id.ServerDevices, es.serverPath)
	}
	if opts.Begin != nil {
		opts.Begin(&id)
	}
	rep, err = runClient(ctx, conns, opts)
	if rep != nil {
		rep.Devices, rep.ClientDevices, rep.ServerDevices = id.Devices, id.ClientDevices, id.ServerDevices
	}
	if err != nil {
		return rep, err
	}
	// The removal is the servers' EOF; a server that failed says so here
	// (the client normally heard it first, in RSLT).
	if err := setup.remove(); err != nil {
		return rep, err
	}
	timeout := time.After(serverGrace)
	for range setup.streams {
		select {
		case serr := <-serverDone:
			if serr != nil {
				return rep, fmt.Errorf("%s: %w", serverHost, serr)
			}
		case <-timeout:
			return rep, fmt.Errorf("%s: a server did not see its stream removed in %v", serverHost, serverGrace)
		}
	}
	return rep, nil
}

// ---- the report ----

// benchReport is what a client run found, printed as a table or as JSON.
type benchReport struct {
	Client        string           `json:"client"`
	Server        string           `json:"server"`
	Devices       string           `json:"devices,omitempty"` // "fuse" or "cuse" on the emulated hosts
	ClientDevices []string         `json:"client_devices"`
	ServerDevices []string         `json:"server_devices,omitempty"`
	Bandwidth     *bandwidthReport `json:"bandwidth,omitempty"`
	Latency       *latencyReport   `json:"latency,omitempty"`
	// Error is why the run failed (JSON only; the command also exits 1).
	Error string `json:"error,omitempty"`
}

type bandwidthReport struct {
	Bidir     bool    `json:"bidir"`
	WriteSize int     `json:"write_size"`
	Bytes     uint64  `json:"bytes_per_direction,omitempty"`
	Seconds   float64 `json:"seconds_per_direction,omitempty"`
	// Streams are each stream's directions; All sums each direction over
	// the streams (bytes added, seconds the longest stream's); MBps is
	// every direction of every stream together.
	Streams []streamReport    `json:"streams"`
	All     []directionReport `json:"all"`
	MBps    float64           `json:"mb_per_s"`
}

type streamReport struct {
	Stream     int               `json:"stream"`
	Directions []directionReport `json:"directions"`
}

// directionReport is one direction's data as its receiver verified it:
// Bytes in Seconds, from the test's start to DONE.
type directionReport struct {
	From    string  `json:"from"`
	To      string  `json:"to"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
}

type latencyReport struct {
	Client string              `json:"-"`
	Server string              `json:"-"`
	Sizes  []latencySizeReport `json:"sizes"`
}

type latencySizeReport struct {
	Size   int     `json:"size"`
	Rounds int     `json:"rounds"`
	Warmup int     `json:"warmup"`
	MinUs  float64 `json:"min_us"`
	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
	MaxUs  float64 `json:"max_us"`
}

// sum fills All and MBps.
func (b *bandwidthReport) sum(opts clientOptions) {
	type key struct{ from, to string }
	var order []key
	all := map[key]*directionReport{}
	var bytes uint64
	var longest float64
	for _, s := range b.Streams {
		for _, d := range s.Directions {
			k := key{d.From, d.To}
			a := all[k]
			if a == nil {
				a = &directionReport{From: d.From, To: d.To}
				all[k] = a
				order = append(order, k)
			}
			a.Bytes += d.Bytes
			a.Seconds = max(a.Seconds, d.Seconds)
			bytes += d.Bytes
			longest = max(longest, d.Seconds)
		}
	}
	for _, k := range order {
		a := all[k]
		a.MBps = mbps(a.Bytes, time.Duration(a.Seconds*float64(time.Second)))
		b.All = append(b.All, *a)
	}
	b.MBps = mbps(bytes, time.Duration(longest*float64(time.Second)))
}

func (r *benchReport) writeJSON(w io.Writer) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(r)
}

// printHeader says what the run measures: which devices, from where to
// where.
func (r *benchReport) printHeader(w io.Writer) {
	devices := ""
	switch r.Devices {
	case "fuse":
		devices = ", FUSE fallback devices"
	case "cuse":
		devices = ", CUSE devices"
	}
	fmt.Fprintf(w, "tbstream bench: %s → %s%s; every byte verified\n", r.Client, r.Server, devices)
	for i, p := range r.ClientDevices {
		if i < len(r.ServerDevices) {
			fmt.Fprintf(w, "  stream %d: %s ↔ %s\n", i, p, r.ServerDevices[i])
		} else {
			fmt.Fprintf(w, "  stream %d: %s\n", i, p)
		}
	}
}

// printResults prints the tables of the run's results.
func (r *benchReport) printResults(w io.Writer) {
	if b := r.Bandwidth; b != nil {
		how := fmt.Sprintf("%.3g s", b.Seconds)
		if b.Bytes > 0 {
			how = sizeText(b.Bytes)
		}
		dirs := "one direction"
		if b.Bidir {
			dirs = "both directions at once"
		}
		streams := "1 stream"
		if len(b.Streams) != 1 {
			streams = fmt.Sprintf("%d streams at once", len(b.Streams))
		}
		fmt.Fprintf(w, "\nbandwidth: %s, %s, %s per stream and direction, writes of %s\n", streams, dirs, how, sizeText(uint64(b.WriteSize)))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "STREAM\tFROM\tTO\tBYTES\tSECONDS\tMB/s\t")
		for _, s := range b.Streams {
			for _, d := range s.Directions {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.2f\t%.1f\t\n", s.Stream, d.From, d.To, d.Bytes, d.Seconds, d.MBps)
			}
		}
		if len(b.Streams) > 1 || b.Bidir {
			for _, d := range b.All {
				fmt.Fprintf(tw, "all\t%s\t%s\t%d\t%.2f\t%.1f\t\n", d.From, d.To, d.Bytes, d.Seconds, d.MBps)
			}
		}
		tw.Flush()
		if len(b.All) > 1 {
			fmt.Fprintf(w, "both directions together: %.1f MB/s\n", b.MBps)
		}
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(w, "\nlatency: ping-pong on stream 0, %s writes a message, %s reads and echoes it; round trips in µs\n", r.Client, r.Server)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "SIZE\tROUNDS\tMIN\tP50\tP99\tMAX\t")
		for _, s := range l.Sizes {
			fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n", s.Size, s.Rounds, s.MinUs, s.P50Us, s.P99Us, s.MaxUs)
		}
		tw.Flush()
	}
}
