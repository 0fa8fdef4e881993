package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"tbstream/cmd/internal/daemon"
)

// The two emulated hosts of the documentation: host2 sees host1 at route 1
// (0-1), host1 sees host2 at route 503 (0-503). host2 listens for the
// cable on a unix socket, host1 plugs into it.
type demoHost struct {
	name, peer         string
	adapter, peerRoute string
	cable              func(run string) []string
}

var demoHosts = []demoHost{
	{"host2", "0-1", "1", "1", func(run string) []string {
		return []string{"-listen", "unix:" + filepath.Join(run, "cable.sock")}
	}},
	{"host1", "0-503", "3", "503", func(run string) []string {
		return []string{"-connect", "unix:" + filepath.Join(run, "cable.sock")}
	}},
}

// args are the host's daemon flags for run, its cable included.
func (h demoHost) args(run string) []string {
	return append([]string{"-adapter", h.adapter, "-peer-route", h.peerRoute}, h.cable(run)...)
}

// The cables up offers: a unix socket the hosts meet on, with the frames
// in shared memory (shm) or on the socket itself; both hosts in one
// process with an in-process cable (inproc); or a USB link on this machine
// (usb[:UDC], dummy_hcd for a test): host1 is the gadget on UDC, host2 the
// USB host through libusb.
const (
	cableShm       = "shm"
	cableSocket    = "socket"
	cableInProcess = "inproc"
	cableUSB       = "usb"
)

// Pairing deadlines: a unix-socket cable pairs in well under a second; a
// USB link must enumerate, be configured and reset before the cable's
// handshake, which in a software-emulated VM (qemu TCG, dummy_hcd) has
// taken tens of seconds.
const (
	pairDeadline    = 30 * time.Second
	pairDeadlineUSB = 120 * time.Second
)

// errNoUSBHostUp: up -cable usb in a binary without the USB host side.
var errNoUSBHostUp = errors.New("up -cable usb: this tbstream was built without the USB host side (host2 drives the link through libusb): build it with CGO_ENABLED=1 go build -tags usb ./cmd/tbstream (needs gcc, pkg-config and libusb-1.0-0-dev)")

// upPlan is what up starts: one pair-daemon for both hosts (pair), or each
// host's daemon with its arguments after -name, -run-dir and
// -device-prefix; and how long pairing may take.
type upPlan struct {
	pair     bool
	args     map[string][]string
	deadline time.Duration
}

// planUp builds the hosts' arguments for -cable (usbHost: this binary
// has the USB host side).
func planUp(run, cable string, usbHost bool) (upPlan, error) {
	p := upPlan{args: map[string][]string{}, deadline: pairDeadline}
	kind, udc, _ := strings.Cut(cable, ":")
	switch {
	case cable == cableShm, cable == cableSocket:
		for _, h := range demoHosts {
			p.args[h.name] = h.args(run)
			if cable == cableSocket {
				p.args[h.name] = append(p.args[h.name], "-cable-shm=false")
			}
		}
	case cable == cableInProcess:
		p.pair = true
	case kind == cableUSB:
		if !usbHost {
			return p, errNoUSBHostUp
		}
		gadget := "usb-gadget"
		if udc != "" {
			gadget += ":" + udc
		}
		// The routes and adapters of the socket demo, so that the
		// documented paths (0-503.0 on host1, 0-1.0 on host2) hold.
		p.args["host1"] = []string{"-adapter", "3", "-peer-route", "503", "-cable", gadget}
		p.args["host2"] = []string{"-adapter", "1", "-peer-route", "1", "-cable", "usb"}
		p.deadline = pairDeadlineUSB
	default:
		return p, fmt.Errorf("up: -cable %q: want %s, %s, %s or %s[:UDC]", cable, cableShm, cableSocket, cableInProcess, cableUSB)
	}
	return p, nil
}

// upReport is what up did about one host: started it, or found it
// running.
type upReport struct {
	host    string
	pid     int
	started bool
	cable   string
}

func (r upReport) String() string {
	if r.started {
		return fmt.Sprintf("%s: started pid %d (cable %s)", r.host, r.pid, r.cable)
	}
	return fmt.Sprintf("%s: already running (pid %d)", r.host, r.pid)
}

// up starts the two hosts as background daemons (re-running this binary)
// unless they run already, and waits until each sees the other's stream
// service. It returns what it did per host, by name. A host that exits
// meanwhile is reported with its own last error line from its log.
func up(ctx context.Context, run, cable string) ([]upReport, error) {
	plan, err := planUp(run, cable, daemon.USBHostBuilt)
	if err != nil {
		return nil, err
	}
	if err := needRoot("up", "the hosts mount FUSE file systems"); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("up: this binary, to start the hosts with: %w", err)
	}
	// Before anything is asked, opened or started there: a run root or
	// host directory that others could write is refused.
	for _, h := range demoHosts {
		dir, err := makeHostDir(run, h.name)
		if err != nil {
			return nil, err
		}
		dir.Close()
	}
	started := map[string]*startedHost{}
	runningPIDs := map[string]int{}
	for _, h := range demoHosts {
		if pid, err := daemon.Owner(hostDir(run, h.name)); err == nil && pid != 0 {
			runningPIDs[h.name] = pid
		}
	}
	switch {
	case plan.pair && len(runningPIDs) == 0:
		if started, err = startPair(self, run); err != nil {
			return nil, err
		}
	case plan.pair && len(runningPIDs) < len(demoHosts):
		return nil, errors.New("up -cable inproc: one host runs already on its own; stop it first with tbstream down")
	case !plan.pair:
		for _, h := range demoHosts {
			if runningPIDs[h.name] != 0 {
				continue
			}
			s, err := startHost(self, run, h.name, plan.args[h.name])
			if err != nil {
				return nil, err
			}
			started[h.name] = s
		}
	}
	deadline := time.Now().Add(plan.deadline)
	for _, h := range demoHosts {
		for {
			st, err := daemon.ReadStatus(hostDir(run, h.name))
			if err == nil && hasStreamService(st) {
				break
			}
			if s := started[h.name]; s != nil {
				select {
				case <-s.exited:
					return nil, fmt.Errorf("%s exited: %s", h.name, s.lastError("no error logged"))
				default:
				}
			}
			if time.Now().After(deadline) {
				why := fmt.Sprintf("see %s", filepath.Join(hostDir(run, h.name), "log"))
				if s := started[h.name]; s != nil {
					why = s.lastError(why)
				}
				return nil, fmt.Errorf("%s did not find its peer in %v: %s", h.name, plan.deadline, why)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	var reports []upReport
	for _, h := range demoHosts {
		r := upReport{host: h.name, pid: runningPIDs[h.name], started: started[h.name] != nil, cable: cable}
		if r.started {
			// The process that holds the lock: the daemon, or the
			// pair-daemon of both hosts.
			r.pid, _ = daemon.Owner(hostDir(run, h.name))
		}
		reports = append(reports, r)
	}
	slices.SortFunc(reports, func(a, b upReport) int { return strings.Compare(a.host, b.host) })
	return reports, nil
}

// startedHost is a daemon started by up: where its log began and when it
// exits.
type startedHost struct {
	log    string
	from   int64
	exited chan struct{}
}

// daemonArgs is the command line of host's daemon: tbstream daemon, its
// name, run directory and device prefix, then args.
func daemonArgs(run, host string, args []string) []string {
	return append([]string{"daemon", "-name", host, "-run-dir", hostDir(run, host), "-device-prefix", host + "/"}, args...)
}

func startHost(self, run, host string, args []string) (*startedHost, error) {
	logf, s, err := openLog(run, host)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// With CUSE both hosts share one /dev: each gets a directory.
	if err := startDaemon(self, daemonArgs(run, host, args), logf, s.exited); err != nil {
		return nil, fmt.Errorf("start %s: %w", host, err)
	}
	return s, nil
}

// startPair starts one process for both hosts (pair-daemon); its own
// output goes to the first host's log.
func startPair(self, run string) (map[string]*startedHost, error) {
	started := map[string]*startedHost{}
	exited := make(chan struct{})
	var out *os.File
	for _, h := range demoHosts {
		logf, s, err := openLog(run, h.name)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		s.exited = exited
		started[h.name] = s
		if out == nil {
			out = logf
		}
	}
	if err := startDaemon(self, []string{"-run", run, "pair-daemon"}, out, exited); err != nil {
		return nil, fmt.Errorf("start the hosts' pair-daemon: %w", err)
	}
	return started, nil
}

// openLog opens host's log for appending (openHostLog) and says where
// this start's lines begin.
func openLog(run, host string) (*os.File, *startedHost, error) {
	logf, err := openHostLog(run, host)
	if err != nil {
		return nil, nil, err
	}
	from, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	return logf, &startedHost{log: filepath.Join(hostDir(run, host), "log"), from: from, exited: make(chan struct{})}, nil
}

// makeHostDir makes the run root and host's run directory in it where
// missing and opens the latter, refusing either unless only root can
// write it (daemon.MakeRunDir).
func makeHostDir(run, host string) (*os.File, error) {
	root, err := daemon.MakeRunDir(run)
	if err != nil {
		return nil, runDirError(err)
	}
	root.Close()
	dir, err := daemon.MakeRunDir(hostDir(run, host))
	if err != nil {
		return nil, runDirError(err)
	}
	return dir, nil
}

// checkHostDirs checks the run root and the named hosts' run directories
// (all of up's if none is named) that exist, for commands that only use
// them.
func checkHostDirs(run string, hosts ...string) error {
	if len(hosts) == 0 {
		for _, h := range demoHosts {
			hosts = append(hosts, h.name)
		}
	}
	dirs := []string{run}
	for _, h := range hosts {
		dirs = append(dirs, hostDir(run, h))
	}
	for _, dir := range dirs {
		if err := daemon.CheckRunDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return runDirError(err)
		}
	}
	return nil
}

// runDirError has a refused run directory's fix name the -run flag.
func runDirError(err error) error {
	var unsafe *daemon.UnsafeDirError
	if errors.As(err, &unsafe) {
		unsafe.Example = "-run " + defaultRun
	}
	return err
}

// startDaemon runs self with args in a session of its own, stdin
// /dev/null and its output to logf, and closes exited when it ends.
func startDaemon(self string, args []string, logf *os.File, exited chan struct{}) error {
	// os/exec passes on, besides stdin, stdout and stderr, every
	// descriptor without close-on-exec: those this process inherited
	// (a lock its caller's script holds). The daemon closes them too
	// (daemon.CloseInherited); this keeps them from reaching it at all.
	if err := daemon.CloseOnExecAll(); err != nil {
		return err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		cmd.Wait()
		close(exited)
	}()
	return nil
}

// lastError returns the last error line the daemon logged since it was
// started (its exit message, "tbstream: ...", or an ERROR record), else
// the last warning, else otherwise.
func (s *startedHost) lastError(otherwise string) string {
	f, err := os.OpenFile(s.log, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return otherwise
	}
	defer f.Close()
	if _, err := f.Seek(s.from, io.SeekStart); err != nil {
		return otherwise
	}
	var errLine, warnLine string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		switch line := sc.Text(); {
		case strings.HasPrefix(line, "tbstream:"), strings.Contains(line, "level=ERROR"):
			errLine = line
		case strings.Contains(line, "level=WARN"):
			warnLine = line
		}
	}
	switch {
	case errLine != "":
		// Its own "tbstream: " goes: up's error gets one.
		return strings.TrimPrefix(errLine, "tbstream: ")
	case warnLine != "":
		return warnLine
	}
	return otherwise
}

func hasStreamService(st daemon.Status) bool {
	for _, p := range st.Peers {
		for _, s := range p.Services {
			if s.Key == "stream" {
				return true
			}
		}
	}
	return false
}

// down stops the hosts' daemons, both at once, and returns when they have
// exited and their mounts are gone. It prints what it did, by host name,
// including leftovers of a daemon that died, which it removes; or that
// nothing ran.
func down(w io.Writer, run string) error {
	// Refused as up refuses it, before anything is signalled.
	if err := checkHostDirs(run); err != nil {
		return err
	}
	hosts := make([]string, 0, len(demoHosts))
	for _, h := range demoHosts {
		hosts = append(hosts, h.name)
	}
	slices.Sort(hosts)
	reports := make([][]string, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			reports[i], errs[i] = daemon.Shutdown(context.Background(), hostDir(run, h), 10*time.Second)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("%s: %w", h, errs[i])
			}
		})
	}
	wg.Wait()
	did := false
	for i, h := range hosts {
		for _, r := range reports[i] {
			fmt.Fprintf(w, "%s: %s\n", h, r)
			did = true
		}
	}
	err := errors.Join(errs...)
	if !did && err == nil {
		fmt.Fprintf(w, "nothing running under %s\n", run)
	}
	return err
}
