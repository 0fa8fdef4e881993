package main

// The manual: `tbstream help [COMMAND]` prints it, and doc.go, the
// package documentation (go doc ./cmd/tbstream), is generated from it by
// TestDocUpToDate in help_test.go:
//
//go:generate env TBSTREAM_WRITE_DOC=1 go test -run ^TestDocUpToDate$ .

import (
	"flag"
	"strings"

	"tbstream/cmd/internal/daemon"
)

// topic is one command's manual: "usage:" and its synopses, text, the
// flags of the command's flag set when it has one, then more text.
// Text is plain, wrapped at 78 columns; an indented block (two spaces)
// is set apart by blank lines, as a doc comment's code block is.
type topic struct {
	name, summary string
	synopses      []string
	text          string
	flags         func() string
	after         string
}

// usageText is the topic's synopses, as the help and a usage error
// print them.
func (t topic) usageText() string {
	if len(t.synopses) == 1 {
		return "usage: " + t.synopses[0] + "\n"
	}
	return "usage:\n\n  " + strings.Join(t.synopses, "\n  ") + "\n"
}

// shortUsage is the topic's synopses as a usage error shows them, one a
// line.
func (t topic) shortUsage() string {
	return "usage: " + strings.Join(t.synopses, "\n       ") + "\n"
}

// help is the topic as `tbstream help NAME` prints it.
func (t topic) help() string {
	s := t.usageText() + "\n" + t.text
	if t.flags != nil {
		s += "\nflags:\n\n" + t.flags()
	}
	if t.after != "" {
		s += "\n" + t.after
	}
	return s
}

func lookupTopic(name string) (topic, bool) {
	for _, t := range topics() {
		if t.name == name {
			return t, true
		}
	}
	return topic{}, false
}

// topicHelp is the help of topic name, which exists.
func topicHelp(name string) string {
	t, _ := lookupTopic(name)
	return t.help()
}

// flagsOf lists the flags define puts on a flag set.
func flagsOf(define func(fs *flag.FlagSet)) func() string {
	return func() string {
		fs := newFlags("")
		define(fs)
		return daemon.FormatFlags(fs)
	}
}

// overallHelp is `tbstream help`: what tbstream is, its commands, its
// flags.
func overallHelp() string {
	var b strings.Builder
	b.WriteString(`usage: tbstream [-run DIR] COMMAND [ARGS]

tbstream runs emulated USB4STREAM hosts on this machine, and the tools to
use, watch and measure their streams and those of any other host.

commands:

`)
	for _, t := range topics() {
		b.WriteString("  " + t.name + strings.Repeat(" ", 10-len(t.name)) + t.summary + "\n")
	}
	b.WriteString(`
flags:

  -run DIR     the run root, one directory per host (default ` + defaultRun + `)
  -h, --help   print this text
  --version    print the version

Run 'tbstream help COMMAND' for a command's manual. The run root and each
host's directory in it must be root's and writable by root alone.
Exit status: 0 on success, 1 on failure, 2 for a command line refused.
`)
	return b.String()
}

// topics are the manual's, one per command, in the order of the help.
func topics() []topic {
	return []topic{
		{
			name: "demo", summary: "two emulated hosts moving a disk image, a tarball and a video",
			synopses: []string{"tbstream [-run DIR] demo"},
			text: `demo starts host1 and host2 as up does (unless they run), then runs the
kernel documentation's three workloads through them, each side in a shell
of its host (see shell): a generated 256 MiB disk image backed up from
host1 to host2 with dd bs=256k, its sha256 compared on both sides; a tree
of 1000 files sent with tar | gzip and compared with diff -r; and 100 JPEG
frames sent through GStreamer. It installs GStreamer with apt-get when
gst-launch-1.0 is missing. It prints each step, then the commands to try
by hand. The hosts keep running until tbstream down.

demo needs root.
`,
		},
		{
			name: "up", summary: "start the emulated hosts host1 and host2",
			synopses: []string{"tbstream [-run DIR] up [-cable shm|socket|inproc|usb[:UDC]]"},
			text: `up starts the emulated hosts host1 and host2 that do not run yet, as
background daemons (tbstream daemon), and returns once each sees the
other's stream service. host2 sees host1 as 0-1 and host1 sees host2 as
0-503, as in the kernel documentation. It prints a line per host:

  host1: started pid 4242 (cable shm)
  host2: already running (pid 4243)

A host that exits while up waits is reported at once with the last error
line of its log, <run>/<host>/log (mode 0640).

The cable (-cable) is a unix socket the hosts meet on, which carries the
frames in shared memory (shm, the default) or itself (socket); or one
process, tbstream pair-daemon, runs both hosts, joined by an in-process
cable (inproc); or a USB link on this machine (usb[:UDC]). With inproc a
frame goes from host1's TX slot into host2's RX slot by a function call,
the fastest the emulated fabric gets, but the two hosts then live and die
together: SIGTERM to either's pid, or a crash, stops both (unplug still
pulls the cable and a new one is plugged in). Two daemons are what two
machines are. With usb, host1 is a USB gadget on UDC (the only one when
none is named; dummy_udc.0 with dummy_hcd) and host2 its USB host, through
libusb: a binary built with CGO_ENABLED=1 go build -tags usb.
`,
			flags: flagsOf(func(fs *flag.FlagSet) { upFlags(fs) }),
			after: `up needs root: the hosts mount FUSE file systems.
`,
		},
		{
			name: "down", summary: "stop them",
			synopses: []string{"tbstream [-run DIR] down"},
			text: `down stops host1 and host2 at once and returns when their daemons have
exited and their mounts are gone. A host's daemon is the process that
holds its run directory's lock, found through flock(2) and /proc/locks
(the pid file is never trusted, so a stale one naming another process is
harmless). It gets SIGTERM, and SIGKILL after 10 s; what a killed daemon
leaves behind is then removed. down prints what it did:

  host1: stopped pid 4242
  host2: removed stale mount /run/tbstream/host2/config

or, when no daemon runs, "nothing running under /run/tbstream". up right
after down works.

down needs root.
`,
		},
		{
			name: "shell", summary: "a shell with a host's configfs, sysfs view and devices in place",
			synopses: []string{"tbstream [-run DIR] shell HOST [CMD [ARG...]]"},
			text: `shell runs CMD (default: $SHELL, else /bin/sh) in a private mount
namespace where HOST's configfs is /sys/kernel/config, its sysfs view is
/sys/bus/thunderbolt and /sys/module/thunderbolt_stream, and its devices
are /dev/tbstreamX. The kernel documentation's command lines, and programs
that discover the service in sysfs before they configure it, work
unchanged for either host on one machine. The mounts are private to CMD
and go with it. shell exits with CMD's exit status.

The prompt is "HOST# " ("HOST$ " for a user other than root): PS1 in the
environment, which sh and dash use, and for an interactive bash ($SHELL,
or CMD bash or bash -i) an rc file that runs ~/.bashrc (bash has run the
system's already), then sets PS1. TBSTREAM_HOST is HOST.

PATH begins with the shell's own directory (a tmpfs private to it, holding
its modprobe), then the directory of the tbstream binary that runs shell,
so that tbstream bench -serve /dev/tbstream0 works in the shell even where
tbstream is not on PATH.

modprobe thunderbolt_stream succeeds and prints nothing, as for a loaded
module (also thunderbolt-stream, with parameters, or among other modules
with -a; --first-time fails with "Module already in kernel").
modprobe -r thunderbolt_stream fails as Linux does while anything uses
the module ("modprobe: FATAL: Module thunderbolt_stream is in use.",
exit status 1: an open device or a configfs directory, each of which pins
the module on Linux); otherwise it says that Linux would unload it now
and that tbstream does not, exit status 0. Every other module goes to the
system's modprobe. A program that runs /sbin/modprobe by its full path
gets the system's, and so does a script run by busybox sh, whose modprobe
applet wins over PATH.

/dev/tbstreamN exists exactly while stream N does: it appears at mkdir and
goes at rmdir, so opening it before fails with ENOENT, as on Linux. With
the FUSE fallback the shell's /dev is a tmpfs the daemon keeps
(<run>/<host>/dev-links, shared by every shell of the host): a link per
entry of the real /dev, and tbstreamN while the stream exists. As on
Linux's devtmpfs, root writing with O_CREAT to a name no stream has
creates a regular file there; the stream that later takes the name
replaces it.

shell needs root: it makes a mount namespace.
`,
		},
		{
			name: "list", summary: "hosts, services and streams with their counters; -w: live rates",
			synopses: []string{
				"tbstream [-run DIR] list [-v | -json] [HOST...]",
				"tbstream [-run DIR] list -w [-i D] [-count N] [-json] [HOST...]",
			},
			text: `list shows every host under the run root, or the HOSTs named, in the
spirit of tblist -A: the peers (XDomains) with their services, then the
streams with index, HopIDs, ring size, state, open handles and counters.
UNDELIVERED counts the bytes write(2) queued that no reader of their
session got (the peer's session ended first, or the last close could not
send them); RX DISCARDED the bytes that arrived for a session whose reader
had gone. A host whose daemon does not run is listed as "Host NAME: not
running", and list exits 1; a HOST named that is not under the run root is
an error.

-json prints one JSON document for monitoring tools, {"hosts": [...]}: per
host its devices, sysfs (every file of the sysfs view, by directory below
/sys, as it reads less the final newline, and every link's target),
xdomains (ids, names, UUID, state, maxhopid, generation, requests,
responses, dropped, services), groups with their streams (every attribute,
state, open handles and every counter) and the daemon's process figures.
A host that does not run has only its name and error.

-w watches: every interval (-i, default 1s) it prints a table of the
streams with their rates over the interval, computed from the counters of
two samples. Per stream: host, group, stream, device, state, open handles,
TX and RX MB/s (10^6 bytes per second), TX and RX frames per second, and
the UNDELIVERED and RX DISCARDED counters. Each host ends with a row of
its totals, whose DROPS is the frames its emulated NHI dropped (no path,
ring stopped, RX overflow, PDF mismatch, DMA fault, TX unplugged); "-" on
real hardware. A stream new in the interval, or made anew, shows "-" for
its rates. On a terminal the table is redrawn in place; otherwise each
table follows the last after a blank line, under a line with the time.
With -json each interval is one JSON object on a line of its own (JSON
Lines), with every counter and rate. -w stops at SIGINT or SIGTERM, with
exit status 0, or after -count tables.

list works for any user when the run root and the host directories can be
entered (up makes them mode 0755): the status socket answers a status
request from anyone, leaving out the daemon's open-file count, which only
root may see of a root process. unplug, stacks and profile need root.
`,
			flags: flagsOf(func(fs *flag.FlagSet) { listFlags(fs, &listOptions{}) }),
		},
		{
			name: "unplug", summary: "pull a host's emulated cable out",
			synopses: []string{"tbstream [-run DIR] unplug HOST"},
			text: `unplug pulls HOST's emulated cable out, as a user pulls a cable: both
hosts see the peer go, and the dialling end plugs it in again at once.
Configured streams re-attach with the peer's service; handles open across
the unplug fail from then on with ENXIO (a blocked writer returns with
it), and a new open gets fresh rings and paths.

unplug needs root.
`,
		},
		{
			name: "stacks", summary: "every goroutine's stack of the hosts' daemons",
			synopses: []string{"tbstream [-run DIR] stacks [HOST...]"},
			text: `stacks prints every goroutine's stack of each host's daemon (every host
under the run root, or the HOSTs named), after a line "--- HOST", asked
over its status socket: the daemon keeps running. It is what to attach to
a bug report about a stuck stream or a command that hangs.

stacks needs root.
`,
		},
		{
			name: "profile", summary: "a CPU profile or execution trace of a host's daemon",
			synopses: []string{"tbstream [-run DIR] profile [-trace] HOST SECONDS"},
			text: `profile writes a CPU profile of HOST's daemon over the next SECONDS (at
most 120) to standard output, in pprof format, which go tool pprof reads:

  tbstream profile host1 10 > host1.pprof && go tool pprof -top host1.pprof

With -trace it writes an execution trace instead (go tool trace), which
shows where the time goes waiting: scheduling, blocking, system calls. A
daemon runs one profile or trace at a time.
`,
			flags: flagsOf(func(fs *flag.FlagSet) { profileFlags(fs) }),
			after: `profile needs root.
`,
		},
		{
			name: "bench", summary: "bandwidth and latency between two streams, every byte verified",
			synopses: []string{
				"tbstream [-run DIR] bench [-bw] [-lat] [FLAGS]",
				"tbstream bench -serve PATH[,PATH...] [-json]",
				"tbstream bench -connect PATH[,PATH...] [-bw] [-lat] [FLAGS]",
			},
			text: `bench measures bandwidth and latency between two stream devices, in the
spirit of iperf3 and ib_send_bw/ib_send_lat, with every byte verified:
each 8-byte word of the data holds its offset in the stream (xor a seed
per stream), so lost, repeated, reordered or corrupted bytes are an error
that names the offset (and, for bytes out of place, the offset they were
sent at). Without -bw or -lat both run.

The first form runs host1 → host2 on the emulated hosts (started as by up
if needed): it makes the streams through each host's configfs (mkdir, -1
HopIDs on host2, the announcement on host1), runs the client on host1's
devices and the server on host2's in one process, and removes the streams.
-serve is the server, on any stream device, the kernel's included: it
answers the tests clients ask for, one session per open (it opens the
device again after each), and prints a line per test. -connect is the
client, against a -serve on the other end of each device (one stream per
PATH). Start the server first: the client's first message must find the
server's device open. Between two machines, after the documentation's
mkdir and echo on both:

  host2# tbstream bench -serve /dev/tbstream0
  host1# tbstream bench -connect /dev/tbstream0 -time 2s

The client prints what it measures before it starts, then the results:

  tbstream bench: host1 → host2, FUSE fallback devices; every byte verified
    stream 0: /run/tbstream/host1/dev/tbstream0 ↔ /run/tbstream/host2/dev/tbstream0

  bandwidth: 1 stream, one direction, 3 s per stream and direction, writes of 256 KiB
    STREAM   FROM     TO      BYTES  SECONDS   MB/s

  latency: ping-pong on stream 0, host1 writes a message, host2 reads and echoes it; round trips in µs
    SIZE  ROUNDS  MIN  P50  P99  MAX

with a row per stream and direction (and their sums with -streams or
-bidir), and a row per message size. MB/s is 10^6 bytes per second.
While a test runs, a progress line goes to standard error every 2 s. With
-i D the bandwidth test reports each interval D instead, as iperf3 does:
a line per stream and direction with the interval, the bytes the client
sent (or received) in it and their rate, on standard output (standard
error with -json); the last interval ends with the test, and is left out
when shorter than a tenth of D.
`,
			flags: flagsOf(func(fs *flag.FlagSet) { benchFlagSet(fs, &benchFlags{}) }),
			after: `The two sides speak a small protocol over the stream itself
(benchproto.go): the client sends a header (magic HELO, version, mode,
write size, byte count or duration, seeds, latency sizes and rounds), the
server accepts it (REDY), the data flows (DATA ... DONE with the byte
count sent; latency messages are echoed raw), and the server sends its
side back (RSLT: bytes verified, time, or what it found wrong). Latency
is a ping-pong on the first stream: the client writes S bytes, the server
reads exactly S and writes them back, the client reads S and checks
them. Each read(2) asks for the bytes of the message still missing, as a
latency client does; round trips are in µs, p50 and p99 by nearest rank.
Devices are opened as regular files; short reads and writes of the FUSE
fallback are handled.

The emulated form needs root; -serve and -connect need the devices' read
and write permission.
`,
		},
		{
			name: "daemon", summary: "run one host in the foreground (what tbstreamd runs)",
			synopses: []string{
				"tbstream daemon -run-dir DIR [FLAGS]",
				"tbstreamd -run-dir DIR [FLAGS]",
			},
			text: `daemon runs one host in the foreground, as tbstreamd does: an NHI
(emulated, with a cable to its peer, or real through VFIO), XDomain
discovery, the USB4STREAM service, the configfs tree, the sysfs view and
the /dev/tbstreamN devices. SIGTERM or SIGINT closes the streams, removes
the nodes and unmounts. A second daemon on the same run directory exits
with one line saying that another tbstreamd uses it. up starts each host
as tbstream daemon; with -cable inproc it starts tbstream pair-daemon,
which runs host1 and host2 in one process.

The run directory (-run-dir) holds the host's configfs (config/), the
FUSE fallback's devices (dev/), the sysfs view (sys/), the status socket
(status.sock) that list, stacks, profile and unplug ask, the lock held
while the daemon runs, the pid file and, for hosts up started, the log.
It must be root's and writable by root alone, and so must its parents
(a sticky one such as /tmp aside): a symlink, a directory owned by another
user, or one that group or others can write is refused with one line that
names it and why. Nothing in it is opened through a symlink. The daemon
closes at start every descriptor it inherited beyond standard input,
output and error.
`,
			flags: daemon.FlagDefaults,
			after: `After a crash: a daemon killed with kill -9 leaves its FUSE mounts
(answering ENOTCONN), its pid file and status socket behind. The next
daemon that takes the run directory's lock detaches those mounts lazily,
removes the files, logs one line saying what it removed, and starts:
tbstream up alone brings a killed host back. The surviving host's open
streams end (readers see EOF or an error, writers an error); its
configured streams stay and re-attach when the peer's service reappears.

A daemon that serves FUSE fallback devices, and tbstream bench on them,
run with at least 8 Go Ps (GOMAXPROCS) on machines with fewer cores:
the device server waits for requests in blocking read(2)s of /dev/fuse
(and reads of the fallback's files block too), and the Go runtime leaves
a P with each blocked goroutine until its monitor thread takes it back,
which it does only when no P is idle; with few Ps a goroutine woken by a
request waits for one. With CUSE devices the daemon keeps Go's default
(package cuse reads /dev/cuse through Go's poller). GOMAXPROCS in the
environment wins.

Exit status: 0 after -h, -version, or a stop by SIGTERM or SIGINT; 1 when
the host fails to start; 2 for a command line it refuses.
`,
		},
		{
			name: "version", summary: "print the version",
			synopses: []string{"tbstream version", "tbstream --version"},
			text: `version prints the version of this binary on one line: the module's
version, the VCS revision, its time and whether the tree was modified (as
go build stamps them; a build with -buildvcs=false has no revision), the
Go version, the platform and the build tags (usb in a build with the USB
host side):

  tbstream (devel) rev 44b298d 2026-12-07T22:20:00Z, go1.26.0 linux/amd64, tags: none

tbstreamd -version prints the same line for the daemon.
`,
		},
		{
			name: "help", summary: "print this text, or a command's manual",
			synopses: []string{"tbstream help [COMMAND]"},
			text: `help prints the list of commands, or COMMAND's manual, on standard
output. tbstream -h and --help print the list too, and COMMAND -h the
command's manual. The same manual is the package documentation:
go doc ./cmd/tbstream.

Every command exits with status 0 on success, 1 on failure and 2 for a
command line it refuses (an unknown command or flag, a missing or extra
argument), which it says with the command's usage. Errors go to standard
error, each once, after "tbstream: ".
`,
		},
	}
}
