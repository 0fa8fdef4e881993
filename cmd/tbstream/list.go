package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"tbstream/cmd/internal/daemon"
)

// hostNames returns the hosts under run: every directory with a daemon's
// lock file, whether a daemon runs there now or not.
func hostNames(run string) ([]string, error) {
	entries, err := os.ReadDir(run)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no hosts under %s (it does not exist): tbstream up starts host1 and host2", run)
	case err != nil:
		return nil, fmt.Errorf("hosts under %s: %w", run, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(run, e.Name(), "lock")); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no hosts under %s: tbstream up starts host1 and host2", run)
	}
	return names, nil
}

// selectHosts is the hosts a command names (all under run if none), each
// checked to be there.
func selectHosts(run string, named []string) ([]string, error) {
	names, err := hostNames(run)
	if len(named) == 0 || err != nil {
		return names, err
	}
	for _, h := range named {
		if !slices.Contains(names, h) {
			return nil, fmt.Errorf("no host %q under %s (hosts there: %s)", h, run, strings.Join(names, ", "))
		}
	}
	return named, nil
}

// notRunning is what a command says of a host whose daemon does not run,
// with what to do.
func notRunning(host string) error {
	for _, h := range demoHosts {
		if h.name == host {
			return fmt.Errorf("%s: not running: start it with tbstream up", host)
		}
	}
	return fmt.Errorf("%s: not running: start its tbstreamd", host)
}

// needHost is the status of host's daemon, for a command that needs it
// running, or an error that says what is wrong and what to do.
func needHost(run, host string) (daemon.Status, error) {
	if err := checkHostDirs(run, host); err != nil {
		return daemon.Status{}, err
	}
	if _, err := os.Stat(filepath.Join(hostDir(run, host), "lock")); err != nil {
		names, _ := hostNames(run)
		there := "tbstream up starts host1 and host2"
		if len(names) > 0 {
			there = "hosts there: " + strings.Join(names, ", ")
		}
		return daemon.Status{}, fmt.Errorf("no host %q under %s (%s)", host, run, there)
	}
	st, err := runningStatus(hostDir(run, host))
	if errors.Is(err, errNotRunning) {
		return st, notRunning(host)
	}
	if err != nil {
		return st, fmt.Errorf("%s: %w", host, err)
	}
	return st, nil
}

// hostStatus is the status of host's daemon for a listing, or, when there
// is none to be had, why: "not running: start it with tbstream up", or the
// error with the host's name left out (the listing names the host).
func hostStatus(run, host string) (daemon.Status, string) {
	st, err := runningStatus(hostDir(run, host))
	switch {
	case errors.Is(err, errNotRunning):
		err = notRunning(host)
	case err != nil:
		err = fmt.Errorf("%s: %w", host, err)
	default:
		return st, ""
	}
	_, why, _ := strings.Cut(err.Error(), ": ")
	return st, why
}

// errNotRunning: no daemon holds the host's lock.
var errNotRunning = errors.New("not running")

// runningStatus is the status of the daemon of run directory dir, or why
// there is none (errNotRunning when no daemon runs there). The lock that
// tells whether one runs is root's alone: another user asks the status
// socket, which answers while the daemon runs.
func runningStatus(dir string) (daemon.Status, error) {
	pid, err := daemon.Owner(dir)
	if errors.Is(err, fs.ErrPermission) {
		st, err := daemon.ReadStatus(dir)
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
			return st, errNotRunning
		}
		return st, err
	}
	if err == nil && pid == 0 {
		err = errNotRunning
	}
	if err != nil {
		return daemon.Status{}, err
	}
	return daemon.ReadStatus(dir)
}

// stacks prints the goroutine stacks of the named hosts' daemons (all
// running hosts if none is named) to w, and to errw what a host that
// does not answer says; the others are still asked.
func stacks(w, errw io.Writer, run string, hosts []string) error {
	hosts, err := selectHosts(run, hosts)
	if err != nil {
		return err
	}
	failed := false
	for _, h := range hosts {
		if _, err := needHost(run, h); err != nil {
			fmt.Fprintf(errw, "tbstream: %v\n", err)
			failed = true
			continue
		}
		fmt.Fprintf(w, "--- %s\n", h)
		if err := daemon.WriteStacks(w, hostDir(run, h)); err != nil {
			fmt.Fprintf(errw, "tbstream: %s: %v\n", h, err)
			failed = true
		}
	}
	if failed {
		return errReported
	}
	return nil
}

// profile writes a CPU profile (or with trace an execution trace) of
// host's daemon over the next secs seconds to w.
func profile(w io.Writer, run, host, secs string, trace bool) error {
	n, err := strconv.ParseFloat(secs, 64)
	if err != nil || n <= 0 {
		return usageErrorf("SECONDS %q: want a positive number", secs)
	}
	if _, err := needHost(run, host); err != nil {
		return err
	}
	if err := daemon.WriteProfile(w, hostDir(run, host), time.Duration(n*float64(time.Second)), trace); err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	return nil
}

// listOptions are list's flags.
type listOptions struct {
	verbose, json, watch bool
	interval             time.Duration
	count                int
}

// listFlags defines list's flags on fs.
func listFlags(fs *flag.FlagSet, o *listOptions) {
	fs.BoolVar(&o.verbose, "v", false, "add each daemon's goroutines, threads and open files, and its emulated NHI's dropped frames by reason")
	fs.BoolVar(&o.json, "json", false, "one JSON document (with -w: one JSON object per interval and line)")
	fs.BoolVar(&o.watch, "w", false, "watch: a table of the streams' rates every interval, until SIGINT or SIGTERM")
	fs.DurationVar(&o.interval, "i", time.Second, "with -w, the time `D` between tables")
	fs.IntVar(&o.count, "count", 0, "with -w, stop after `N` tables (0: never)")
}

func runList(ctx context.Context, c *cli, args []string) error {
	var o listOptions
	fs := newFlags("list")
	listFlags(fs, &o)
	hosts, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case !o.watch && (set["i"] || set["count"]):
		return usageErrorf("-i and -count go with -w")
	case o.verbose && (o.json || o.watch):
		return usageErrorf("-v goes with neither -json nor -w")
	case o.interval <= 0:
		return usageErrorf("-i %v: want a positive interval", o.interval)
	case o.count < 0:
		return usageErrorf("-count %d: want 0 or more", o.count)
	}
	if err := checkHostDirs(c.run, hosts...); err != nil {
		return err
	}
	if hosts, err = selectHosts(c.run, hosts); err != nil {
		return err
	}
	switch {
	case o.watch:
		return watchList(ctx, c.stdout, c.run, hosts, watchOptions{interval: o.interval, count: o.count, json: o.json, terminal: isTerminal(c.stdout)})
	case o.json:
		return listJSONTo(c.stdout, c.run, hosts)
	}
	return list(c.stdout, c.run, hosts, o.verbose)
}

// list prints the hosts of the run root in the spirit of `tblist -A`:
// peers (XDomains) with their services, then streams with index, HopIDs,
// state and counters; verbose adds the daemon's goroutines, threads and
// open files. A host whose daemon does not run or does not answer is
// listed as such, and list fails (errReported: the listing said it).
func list(w io.Writer, run string, hosts []string, verbose bool) error {
	failed := false
	for _, name := range hosts {
		st, why := hostStatus(run, name)
		if why != "" {
			fmt.Fprintf(w, "Host %s: %s\n\n", name, why)
			failed = true
			continue
		}
		printStatus(w, st, verbose)
	}
	if failed {
		return errReported
	}
	return nil
}

func printStatus(w io.Writer, st daemon.Status, verbose bool) {
	fmt.Fprintf(w, "Host %s (devices: %s)\n", st.Name, st.Devices)
	if verbose {
		p := st.Process
		fds := strconv.Itoa(p.FDs)
		if p.FDs < 0 {
			fds = "?" // root's to see
		}
		fmt.Fprintf(w, "  tbstreamd pid %d: %d goroutines, %d threads, %s open files, %d panics recovered\n", p.PID, p.Goroutines, p.Threads, fds, p.Panics)
		if f := st.Fabric; f != nil {
			fmt.Fprintf(w, "  emulated NHI: frames dropped: rx no path %d, rx ring stopped %d, rx overflow %d, rx PDF mismatch %d, tx no path %d, tx unplugged %d, DMA faults %d; control frames bad %d, undeliverable %d; cables malformed %d, refused %d\n",
				f.RxNoPath, f.RxRingStopped, f.RxOverflow, f.RxPDFMismatch, f.TxNoPath, f.TxUnplugged, f.DMAFault, f.CtlBadFrame, f.CtlDropped, f.CableMalformed, f.CableRefused)
		}
	}
	for _, p := range st.Peers {
		fmt.Fprintf(w, "  XDomain %s: %s %s, uuid %s, state %s, maxhopid %d, generation %d, requests %d, dropped %d\n",
			p.ID, p.VendorName, p.DeviceName, p.RemoteUUID, p.State, p.MaxHopID, p.Generation, p.Stats.Requests, p.Stats.Dropped)
		for _, s := range p.Services {
			fmt.Fprintf(w, "    Domain %d Route %s Index %s: %s (prtcid %d)\n", p.ID.Domain, p.ID.Route, s.Name[len(p.ID.String())+1:], s.Key, s.PrtcID)
		}
	}
	if len(st.Groups) == 0 {
		fmt.Fprintf(w, "  no streams\n\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GROUP\tSTREAM\tDEVICE\tIN\tOUT\tRING\tSTATE\tOPEN\tTX BYTES\tTX FRAMES\tRX BYTES\tRX FRAMES\tUNDELIVERED\tRX DISCARDED")
	for _, g := range st.Groups {
		if len(g.Streams) == 0 {
			att := "detached"
			if g.Attached {
				att = "attached"
			}
			fmt.Fprintf(tw, "  %s\t-\t-\t-\t-\t-\t%s\t-\t-\t-\t-\t-\t-\t-\n", g.Name, att)
		}
		for _, s := range g.Streams {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", g.Name, s.Name, s.Device,
				s.InHopID, s.OutHopID, s.RingSize, s.State, s.Users, s.TxBytes, s.TxFrames, s.RxBytes, s.RxFrames, s.Undelivered, s.RxDiscarded)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
}
