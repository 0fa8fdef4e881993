package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"tbstream/nhi/emu"
)

// list -w: the streams' rates, a table every interval. Each table comes
// from two samples of the hosts' status (what list -json shows), the
// rates from the differences of their counters over the time between
// them. Sampling is the only impure part: computing the interval
// (rateInterval) and rendering it (writeTable, writeInterval) are pure
// functions of the samples.

// watchOptions are list -w's.
type watchOptions struct {
	interval time.Duration
	count    int  // tables to print; 0: until ctx ends
	json     bool // JSON Lines instead of tables
	terminal bool // redraw in place
}

// watchSample is the hosts' status at one time: each host as list -json
// has it (with Error set for one that did not answer).
type watchSample struct {
	at    time.Time
	hosts []hostJSON
}

// watchInterval is one table: each host's streams with their counters at
// the end of the interval and their rates over it. It is also what -json
// prints, one a line.
type watchInterval struct {
	Time    time.Time   `json:"time"`
	Seconds float64     `json:"seconds"`
	Hosts   []watchHost `json:"hosts"`
}

type watchHost struct {
	Name    string        `json:"name"`
	Error   string        `json:"error,omitempty"`
	Streams []watchStream `json:"streams"`
	// Total sums the streams: counters, and the rates that are known.
	Total watchCounters `json:"total"`
	// Drops is the frames the emulated NHI dropped, all reasons
	// (emuDrops), and DropsPerSecond their rate; nil on real hardware.
	Drops          *uint64  `json:"drops"`
	DropsPerSecond *float64 `json:"drops_per_s"`
}

type watchStream struct {
	Group  string `json:"group"`
	Stream string `json:"stream"`
	Index  int    `json:"index"`
	Device string `json:"device"`
	State  string `json:"state"`
	watchCounters
}

// watchCounters are a stream's counters and rates (or a host's sums). A
// rate is nil when the stream is new in the interval or was made anew
// (a counter went back).
type watchCounters struct {
	Open          int      `json:"open"`
	TxBytes       uint64   `json:"tx_bytes"`
	RxBytes       uint64   `json:"rx_bytes"`
	TxFrames      uint64   `json:"tx_frames"`
	RxFrames      uint64   `json:"rx_frames"`
	RxFrameErrors uint64   `json:"rx_frame_errors"`
	Undelivered   uint64   `json:"undelivered"`
	RxDiscarded   uint64   `json:"rx_discarded"`
	TxMBps        *float64 `json:"tx_mb_per_s"`
	RxMBps        *float64 `json:"rx_mb_per_s"`
	TxFramesPerS  *float64 `json:"tx_frames_per_s"`
	RxFramesPerS  *float64 `json:"rx_frames_per_s"`
}

// streamKey is a stream across samples: a stream removed and made again
// under the same name usually gets another index, and always new
// counters.
type streamKey struct {
	host, group, stream string
	index               int
}

// emuDrops is the frames an emulated NHI dropped, whatever the reason.
func emuDrops(c *emu.Counters) uint64 {
	return c.TxNoPath + c.TxUnplugged + c.RxNoPath + c.RxRingStopped + c.RxOverflow + c.RxPDFMismatch + c.DMAFault
}

// rate is (cur-prev)/secs, or nil when the counter went back or there is
// no time.
func rate(prev, cur uint64, secs, unit float64) *float64 {
	if cur < prev || secs <= 0 {
		return nil
	}
	r := float64(cur-prev) / secs / unit
	return &r
}

// addRate adds r to *sum, making it known.
func addRate(sum **float64, r *float64) {
	if r == nil {
		return
	}
	if *sum == nil {
		*sum = new(float64)
	}
	**sum += *r
}

// rateInterval is the interval from sample prev to sample cur.
func rateInterval(prev, cur watchSample) watchInterval {
	secs := cur.at.Sub(prev.at).Seconds()
	iv := watchInterval{Time: cur.at, Seconds: secs, Hosts: []watchHost{}}
	before := map[streamKey]streamJSON{}
	drops := map[string]uint64{}
	for _, h := range prev.hosts {
		for _, g := range h.Groups {
			for _, s := range g.Streams {
				before[streamKey{h.Name, g.Name, s.Name, s.Index}] = s
			}
		}
		if h.Fabric != nil {
			drops[h.Name] = emuDrops(h.Fabric)
		}
	}
	for _, h := range cur.hosts {
		wh := watchHost{Name: h.Name, Error: h.Error, Streams: []watchStream{}}
		for _, g := range h.Groups {
			for _, s := range g.Streams {
				ws := watchStream{Group: g.Name, Stream: s.Name, Index: s.Index, Device: s.Device, State: s.State,
					watchCounters: watchCounters{Open: s.Open, TxBytes: s.TxBytes, RxBytes: s.RxBytes,
						TxFrames: s.TxFrames, RxFrames: s.RxFrames, RxFrameErrors: s.RxFrameErrors,
						Undelivered: s.Undelivered, RxDiscarded: s.RxDiscarded}}
				if p, ok := before[streamKey{h.Name, g.Name, s.Name, s.Index}]; ok {
					ws.TxMBps = rate(p.TxBytes, s.TxBytes, secs, 1e6)
					ws.RxMBps = rate(p.RxBytes, s.RxBytes, secs, 1e6)
					ws.TxFramesPerS = rate(p.TxFrames, s.TxFrames, secs, 1)
					ws.RxFramesPerS = rate(p.RxFrames, s.RxFrames, secs, 1)
					if ws.TxMBps == nil || ws.RxMBps == nil || ws.TxFramesPerS == nil || ws.RxFramesPerS == nil {
						// Made anew: none of its rates means anything.
						ws.TxMBps, ws.RxMBps, ws.TxFramesPerS, ws.RxFramesPerS = nil, nil, nil, nil
					}
				}
				wh.Streams = append(wh.Streams, ws)
				t := &wh.Total
				t.Open += ws.Open
				t.TxBytes += ws.TxBytes
				t.RxBytes += ws.RxBytes
				t.TxFrames += ws.TxFrames
				t.RxFrames += ws.RxFrames
				t.RxFrameErrors += ws.RxFrameErrors
				t.Undelivered += ws.Undelivered
				t.RxDiscarded += ws.RxDiscarded
				addRate(&t.TxMBps, ws.TxMBps)
				addRate(&t.RxMBps, ws.RxMBps)
				addRate(&t.TxFramesPerS, ws.TxFramesPerS)
				addRate(&t.RxFramesPerS, ws.RxFramesPerS)
			}
		}
		if len(wh.Streams) == 0 && h.Error == "" {
			// Nothing moves where there is no stream.
			for _, r := range []**float64{&wh.Total.TxMBps, &wh.Total.RxMBps, &wh.Total.TxFramesPerS, &wh.Total.RxFramesPerS} {
				*r = new(float64)
			}
		}
		if h.Fabric != nil {
			d := emuDrops(h.Fabric)
			wh.Drops = &d
			if p, ok := drops[h.Name]; ok {
				wh.DropsPerSecond = rate(p, d, secs, 1)
			}
		}
		iv.Hosts = append(iv.Hosts, wh)
	}
	return iv
}

// writeTable writes the interval as a table: a row per stream and one of
// each host's totals, then a line per host that did not answer.
func writeTable(w io.Writer, iv watchInterval) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tGROUP\tSTREAM\tDEVICE\tSTATE\tOPEN\tTX MB/s\tRX MB/s\tTX FRAMES/s\tRX FRAMES/s\tUNDELIVERED\tRX DISCARDED\tDROPS")
	row := func(host, group, stream, device, state string, c watchCounters, drops string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", host, group, stream, device, state, c.Open,
			rateText(c.TxMBps, 1), rateText(c.RxMBps, 1), rateText(c.TxFramesPerS, 0), rateText(c.RxFramesPerS, 0),
			c.Undelivered, c.RxDiscarded, drops)
	}
	var failed []string
	for _, h := range iv.Hosts {
		if h.Error != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", h.Name, h.Error))
			continue
		}
		for _, s := range h.Streams {
			row(h.Name, s.Group, s.Stream, s.Device, s.State, s.watchCounters, "-")
		}
		drops := "-"
		if h.Drops != nil {
			drops = fmt.Sprint(*h.Drops)
		}
		streams := "1 stream"
		if len(h.Streams) != 1 {
			streams = fmt.Sprintf("%d streams", len(h.Streams))
		}
		row(h.Name, "total", streams, "", "", h.Total, drops)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range failed {
		if _, err := fmt.Fprintln(w, f); err != nil {
			return err
		}
	}
	return nil
}

// rateText is a rate with prec decimals, or "-" when it is not known.
func rateText(r *float64, prec int) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, *r)
}

// writeInterval writes one interval as list -w prints it: a JSON line;
// on a terminal the screen cleared and the table with a title; else the
// table under a line with the time, after a blank line but for the first
// (first).
func writeInterval(w io.Writer, iv watchInterval, o watchOptions, first bool) error {
	var b bytes.Buffer
	when := iv.Time.Format("2006-01-02 15:04:05 MST")
	switch {
	case o.json:
		if err := json.NewEncoder(&b).Encode(iv); err != nil {
			return fmt.Errorf("list -w -json: %w", err)
		}
	case o.terminal:
		fmt.Fprintf(&b, "\x1b[H\x1b[2J%s: rates over %.2f s, every %v; Ctrl-C stops\n\n", when, iv.Seconds, o.interval)
	default:
		if !first {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s: rates over %.2f s\n", when, iv.Seconds)
	}
	if !o.json {
		if err := writeTable(&b, iv); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// takeSample asks each host for its status; hosts are those named, or
// every host under run at the time.
func takeSample(run string, named []string, at time.Time) watchSample {
	s := watchSample{at: at}
	hosts := named
	if len(hosts) == 0 {
		hosts, _ = hostNames(run)
	}
	for _, name := range hosts {
		st, why := hostStatus(run, name)
		if why != "" {
			s.hosts = append(s.hosts, hostJSON{Name: name, Error: why})
			continue
		}
		h := listJSONOf(st)
		h.Name = name
		s.hosts = append(s.hosts, h)
	}
	return s
}

// watchList is list -w: a table every interval until ctx ends or count
// tables are out. Hosts that do not answer are reported in each table and
// do not stop it.
func watchList(ctx context.Context, w io.Writer, run string, hosts []string, o watchOptions) error {
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	prev := takeSample(run, hosts, time.Now())
	for n := 0; o.count == 0 || n < o.count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur := takeSample(run, hosts, time.Now())
		if err := writeInterval(w, rateInterval(prev, cur), o, n == 0); err != nil {
			return fmt.Errorf("list -w: %w", err)
		}
		prev = cur
	}
	return nil
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
