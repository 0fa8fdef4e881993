// Command tbstream is the tbstream command line:
//
//	tbstream demo              two emulated hosts, a backup, a tarball and a video through them
//	tbstream up [-cable shm|socket|inproc|usb[:UDC]] | down
//	                           start or stop the two emulated hosts (host1, host2)
//	tbstream shell HOST [CMD]  a shell in which HOST's configfs is /sys/kernel/config and
//	                           its devices are /dev/tbstreamX
//	tbstream list [-v|-json]   hosts, services and streams with their counters
//	tbstream stacks [HOST...]  every goroutine's stack in the hosts' daemons (for bug reports)
//	tbstream profile [-trace] HOST SECS
//	                           a CPU profile (or an execution trace) of HOST's daemon, to stdout
//	tbstream bench [FLAGS]     bandwidth and latency between two streams, every byte verified
//	tbstream daemon FLAGS      one host (what tbstreamd runs)
//
// The hosts live under a run root (-run, default /run/tbstream): one run
// directory per host. The run root and each run directory must be root's
// alone (see the usage text); the daemons keep none of the descriptors
// their starter had open beyond stdin, stdout and stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"tbstream/cmd/internal/daemon"
)

const defaultRun = "/run/tbstream"

const usage = `usage: tbstream [-run DIR] COMMAND

commands:
  demo              start two emulated hosts (if needed) and move a disk image,
                    a tarball and a video stream between them
  up [-cable shm|socket|inproc|usb[:UDC]]
                    start the two emulated hosts host1 and host2; their cable
                    is a unix socket, with the frames in shared memory (shm,
                    the default) or on the socket itself; or one process
                    runs both hosts, joined by an in-process cable (inproc);
                    or a USB link on this machine (usb: host1 the gadget on
                    UDC, dummy_udc.0 with dummy_hcd; host2 the USB host,
                    which needs a build with CGO_ENABLED=1 go build -tags usb
                    ./cmd/tbstream)
  down              stop them
  shell HOST [CMD]  run CMD (default: your shell) with HOST's configfs at
                    /sys/kernel/config and its devices at /dev/tbstreamX
  list [-v|-json]   hosts, services and streams with their counters; -v adds
                    each daemon's goroutines, threads and open files; -json
                    prints all that and the sysfs view as one JSON document
  unplug HOST       pull HOST's emulated cable out; the dialling end plugs it
                    in again at once (to see what unplug and re-plug do)
  stacks [HOST...]  what each host's daemon is doing: every goroutine's stack
  profile [-trace] HOST SECS
                    a CPU profile of HOST's daemon over SECS seconds, in pprof
                    format on standard output (go tool pprof reads it); with
                    -trace an execution trace (go tool trace)
  bench [FLAGS]     bandwidth and latency, every byte verified: host1 → host2
                    by default, or -serve PATH / -connect PATH between any two
                    stream devices, also the kernel's (bench -h for flags)
  daemon FLAGS      run one host in the foreground (tbstreamd; -h for flags)
  pair-daemon       run host1 and host2 in the foreground in one process,
                    joined by an in-process cable (what up -cable inproc runs)

The run root (-run) and each host's directory in it must be directories
only root can write: a symlink, a directory owned by another user, one that
group or others can write, or one with such a parent (a sticky one such as
/tmp aside) is refused with one line saying which and why.
`

func main() {
	fs := flag.NewFlagSet("tbstream", flag.ContinueOnError)
	run := fs.String("run", defaultRun, "run root holding one directory per host")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	if err := fs.Parse(os.Args[1:]); err != nil || fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	args := fs.Args()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "demo":
		err = demo(ctx, *run)
	case "up":
		ufs := flag.NewFlagSet("up", flag.ContinueOnError)
		cable := ufs.String("cable", cableShm, "the hosts' cable: a unix socket carrying the frames in shared memory (shm) or itself (socket), both hosts in one process (inproc), or a USB link on this machine (usb[:UDC]; a -tags usb build)")
		if err = ufs.Parse(args[1:]); err == nil {
			err = up(ctx, *run, *cable)
		}
	case "down":
		err = down(os.Stdout, *run)
	case "shell":
		if len(args) < 2 {
			err = errors.New("usage: tbstream shell HOST [CMD [ARGS...]]")
			break
		}
		err = shell(*run, args[1], args[2:])
	case "unplug":
		if len(args) != 2 {
			err = errors.New("usage: tbstream unplug HOST")
			break
		}
		err = daemon.Unplug(hostDir(*run, args[1]))
	case "list":
		switch {
		case len(args) > 1 && args[1] == "-json":
			err = listJSONTo(os.Stdout, *run)
		default:
			err = list(os.Stdout, *run, len(args) > 1 && args[1] == "-v")
		}
	case "stacks":
		err = stacks(os.Stdout, *run, args[1:])
	case "profile":
		err = profile(os.Stdout, *run, args[1:])
	case "bench":
		err = bench(ctx, os.Stdout, os.Stderr, *run, args[1:])
	case "pair-daemon":
		// First, as tbstreamd does (nothing above opens a file).
		inherited, fdErr := daemon.CloseInherited()
		err = pairDaemon(ctx, *run, func(log *slog.Logger) { daemon.LogInherited(log, inherited, fdErr) })
	case "daemon":
		inherited, fdErr := daemon.CloseInherited()
		var opts daemon.Options
		opts, err = daemon.ParseFlags("tbstream daemon", args[1:])
		if err == nil {
			daemon.LogInherited(opts.Logger, inherited, fdErr)
			err = daemon.Run(ctx, opts)
		}
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		var exit *exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "tbstream:", err)
		os.Exit(1)
	}
}

// exitError carries a child's exit status out of shell.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func hostDir(run, host string) string { return filepath.Join(run, host) }
