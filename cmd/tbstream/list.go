package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"tbstream/cmd/internal/daemon"
)

// hostNames returns the hosts under run: every directory with a daemon's
// lock file, whether a daemon runs there now or not.
func hostNames(run string) ([]string, error) {
	entries, err := os.ReadDir(run)
	if err != nil {
		return nil, fmt.Errorf("no hosts under %s: %w", run, err)
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
		return nil, fmt.Errorf("no hosts under %s", run)
	}
	return names, nil
}

// stacks prints the goroutine stacks of the named hosts' daemons (all
// running hosts if none is named). A daemon that does not answer is
// reported and the others are still asked.
func stacks(w io.Writer, run string, hosts []string) error {
	if len(hosts) == 0 {
		var err error
		if hosts, err = hostNames(run); err != nil {
			return err
		}
	}
	var errs []error
	for _, h := range hosts {
		fmt.Fprintf(w, "--- %s\n", h)
		if err := daemon.WriteStacks(w, hostDir(run, h)); err != nil {
			fmt.Fprintf(w, "%v\n", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// profile writes a CPU profile (or with -trace an execution trace) of one
// host's daemon to w.
func profile(w io.Writer, run string, args []string) error {
	trace := len(args) > 0 && args[0] == "-trace"
	if trace {
		args = args[1:]
	}
	if len(args) != 2 {
		return errors.New("usage: tbstream profile [-trace] HOST SECONDS")
	}
	secs, err := strconv.ParseFloat(args[1], 64)
	if err != nil {
		return fmt.Errorf("profile: seconds %q: %w", args[1], err)
	}
	return daemon.WriteProfile(w, hostDir(run, args[0]), time.Duration(secs*float64(time.Second)), trace)
}

// list prints every host of the run root in the spirit of `tblist -A`:
// peers (XDomains) with their services, then streams with index, HopIDs,
// state and counters; verbose adds the daemon's goroutines, threads and
// open files. A host whose daemon does not run or does not answer
// is reported, and list fails.
func list(w io.Writer, run string, verbose bool) error {
	names, err := hostNames(run)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		dir := filepath.Join(run, name)
		if pid, err := daemon.Owner(dir); err != nil || pid == 0 {
			if err == nil {
				err = errors.New("not running")
			}
			fmt.Fprintf(w, "Host %s: %v\n\n", name, err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		st, err := daemon.ReadStatus(dir)
		if err != nil {
			fmt.Fprintf(w, "Host %s: %v\n\n", name, err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		printStatus(w, st, verbose)
	}
	return errors.Join(errs...)
}

func printStatus(w io.Writer, st daemon.Status, verbose bool) {
	fmt.Fprintf(w, "Host %s (devices: %s)\n", st.Name, st.Devices)
	if verbose {
		p := st.Process
		fmt.Fprintf(w, "  tbstreamd pid %d: %d goroutines, %d threads, %d open files, %d panics recovered\n", p.PID, p.Goroutines, p.Threads, p.FDs, p.Panics)
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
