package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"tbstream/cmd/internal/daemon"
)

const defaultRun = "/run/tbstream"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cliMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli is one run of the command line: where it writes and the run root.
type cli struct {
	stdout, stderr io.Writer
	run            string
}

// command is one of tbstream's commands: run gets the arguments after
// its name. Its manual is the help topic of the same name (help.go).
type command struct {
	name string
	run  func(ctx context.Context, c *cli, args []string) error
}

// commands are tbstream's commands, pair-daemon (what up -cable inproc
// starts, documented under daemon) among them.
func commands() []command {
	return []command{
		{"demo", runDemo},
		{"up", runUp},
		{"down", runDown},
		{"shell", runShell},
		{"list", runList},
		{"unplug", runUnplug},
		{"stacks", runStacks},
		{"profile", runProfile},
		{"bench", runBench},
		{"daemon", runDaemon},
		{"pair-daemon", runPairDaemon},
		{"version", runVersion},
		{"help", runHelp},
	}
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// cliMain runs the command line args and returns the exit status: 0 on
// success (help included), 1 on failure, 2 for a command line refused.
func cliMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("tbstream")
	run := fs.String("run", defaultRun, "")
	version := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, overallHelp())
			return 0
		}
		fmt.Fprintf(stderr, "tbstream: %v\nrun 'tbstream help' for usage\n", err)
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, daemon.Version("tbstream"))
		return 0
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, overallHelp())
		return 2
	}
	name := fs.Arg(0)
	cmd, ok := lookupCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "tbstream: unknown command %q; %s\n", name, commandHint(name))
		return 2
	}
	c := &cli{stdout: stdout, stderr: stderr, run: *run}
	return c.exit(name, cmd.run(ctx, c, fs.Args()[1:]))
}

// exit reports what command name returned, once, and returns the exit
// status.
func (c *cli) exit(name string, err error) int {
	var usage *usageError
	var exit *exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(c.stdout, topicHelp(helpName(name)))
		return 0
	case errors.As(err, &exit):
		return exit.code
	case errors.Is(err, errReported):
		return 1
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(c.stderr, "tbstream: %s: interrupted\n", name)
		return 1
	case errors.As(err, &usage) && usage.bare:
		fmt.Fprintf(c.stderr, "tbstream: %s: %v\n", name, usage.err)
		return 2
	case errors.As(err, &usage):
		t, _ := lookupTopic(helpName(name))
		fmt.Fprintf(c.stderr, "tbstream: %s: %v\n%srun 'tbstream help %s' for details\n", name, usage.err, t.shortUsage(), t.name)
		return 2
	}
	fmt.Fprintf(c.stderr, "tbstream: %v\n", err)
	return 1
}

// helpName is the help topic of command name.
func helpName(name string) string {
	if name == "pair-daemon" {
		return "daemon"
	}
	return name
}

// usageError is a command line a command refuses (exit status 2): an
// unknown flag, a bad flag value, a missing or extra argument. Its
// report adds the command's usage, unless bare.
type usageError struct {
	err  error
	bare bool
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// errReported is a failure already reported where it happened (list's
// "Host host2: not running"): exit status 1, nothing more printed.
var errReported = errors.New("failure reported above")

// exitError carries a child's exit status out of shell.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// newFlags is a command's flag set: it prints nothing, and parse returns
// what is wrong for exit to report.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses a command's args with fs: flag.ErrHelp for -h or --help, a
// usage error for a flag fs refuses.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err: err}
	}
	return nil
}

// parseInterspersed is parse where flags may also follow the arguments
// (list host1 -v); it returns the arguments. After "--" everything is an
// argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		i := slices.Index(args, "--")
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if i >= 0 && len(rest) == len(args)-i-1 {
			return append(pos, rest...), nil // flag consumed "--"
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// noArgs refuses arguments after a command that takes none.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// parseNoArgs is parse for a command that takes flags only.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := parse(fs, args); err != nil {
		return err
	}
	return noArgs(fs)
}

// needRoot refuses what only root may do (what, because why) with an
// error that says so.
func needRoot(what, why string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root (%s); run it with sudo", what, why)
	}
	return nil
}

func hostDir(run, host string) string { return filepath.Join(run, host) }

// commandHint says what to do about an unknown command: a command it
// is close to, else the help.
func commandHint(name string) string {
	if c := nearCommand(name); c != "" {
		return fmt.Sprintf("did you mean %q? (run 'tbstream help' for the list)", c)
	}
	return "run 'tbstream help' for the list"
}

// nearCommand is the command name probably meant (a synonym, a unique
// prefix, or one or two typos away), or "".
func nearCommand(name string) string {
	synonyms := map[string]string{
		"start": "up", "stop": "down", "status": "list", "show": "list", "ls": "list",
		"ps": "list", "watch": "list", "top": "list", "sh": "shell", "run": "shell",
		"exec": "shell", "perf": "bench", "iperf": "bench", "-v": "version", "--help": "help",
	}
	if c, ok := synonyms[strings.ToLower(name)]; ok {
		return c
	}
	var best string
	bestDist, ties := 3, 0
	var prefixed []string
	for _, c := range commands() {
		if c.name == "pair-daemon" {
			continue
		}
		if len(name) >= 2 && strings.HasPrefix(c.name, name) {
			prefixed = append(prefixed, c.name)
		}
		d := editDistance(strings.ToLower(name), c.name)
		switch {
		case d < bestDist:
			best, bestDist, ties = c.name, d, 0
		case d == bestDist:
			ties++
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	// One typo in a short name, two in a longer one; a tie says nothing.
	if best == "" || ties > 0 || bestDist > 1 && len(name) < 5 {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// ---- the commands ----

func runDemo(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("demo")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := needRoot("demo", "it starts the hosts"); err != nil {
		return err
	}
	return demo(ctx, c.run)
}

func runUp(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("up")
	cable := upFlags(fs)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	reports, err := up(ctx, c.run, *cable)
	for _, r := range reports {
		fmt.Fprintln(c.stdout, r)
	}
	return err
}

// upFlags defines up's flags on fs.
func upFlags(fs *flag.FlagSet) *string {
	return fs.String("cable", cableShm, "the hosts' cable, `KIND` shm, socket, inproc or usb[:UDC] (see above)")
}

func runDown(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("down")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := needRoot("down", "the hosts' daemons are root's"); err != nil {
		return err
	}
	return down(c.stdout, c.run)
}

func runShell(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("shell")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("no HOST given")
	}
	if err := needRoot("shell", "it makes a mount namespace"); err != nil {
		return err
	}
	return shell(c.run, fs.Arg(0), fs.Args()[1:])
}

func runUnplug(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("unplug")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		return usageErrorf("no HOST given")
	case 1:
	default:
		return usageErrorf("unexpected argument %q: unplug takes one HOST", fs.Arg(1))
	}
	if err := needRoot("unplug", "the daemon answers only root"); err != nil {
		return err
	}
	host := fs.Arg(0)
	if _, err := needHost(c.run, host); err != nil {
		return err
	}
	if err := daemon.Unplug(hostDir(c.run, host)); err != nil {
		return fmt.Errorf("%s: %w", host, err)
	}
	fmt.Fprintf(c.stdout, "%s: cable pulled out\n", host)
	return nil
}

func runStacks(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("stacks")
	hosts, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := needRoot("stacks", "the daemon answers only root"); err != nil {
		return err
	}
	return stacks(c.stdout, c.stderr, c.run, hosts)
}

func runProfile(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("profile")
	trace := profileFlags(fs)
	args, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(args) != 2 {
		return usageErrorf("want HOST and SECONDS, got %d argument(s)", len(args))
	}
	if err := needRoot("profile", "the daemon answers only root"); err != nil {
		return err
	}
	return profile(c.stdout, c.run, args[0], args[1], *trace)
}

// profileFlags defines profile's flags on fs.
func profileFlags(fs *flag.FlagSet) *bool {
	return fs.Bool("trace", false, "an execution trace (go tool trace) instead of a CPU profile")
}

func runBench(ctx context.Context, c *cli, args []string) error {
	return bench(ctx, c.stdout, c.stderr, c.run, args)
}

func runDaemon(ctx context.Context, c *cli, args []string) error {
	opts, err := daemon.ParseFlags("tbstream daemon", args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return err
	case errors.Is(err, daemon.ErrVersion):
		return runVersion(ctx, c, nil)
	case err != nil:
		return &usageError{err: err}
	}
	// Before the daemon starts: a descriptor the starter left open would
	// stay open until it stops. (What the daemon inherited is told by the
	// descriptor's missing close-on-exec flag, not by when it was
	// opened; and -h or a usage error leaves this process's alone.)
	inherited, fdErr := daemon.CloseInherited()
	daemon.LogInherited(opts.Logger, inherited, fdErr)
	return daemon.Run(ctx, opts)
}

func runPairDaemon(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("pair-daemon")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	inherited, fdErr := daemon.CloseInherited() // as daemon does
	return pairDaemon(ctx, c.run, func(log *slog.Logger) { daemon.LogInherited(log, inherited, fdErr) })
}

func runVersion(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("version")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, daemon.Version("tbstream"))
	return nil
}

func runHelp(ctx context.Context, c *cli, args []string) error {
	fs := newFlags("help")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		fmt.Fprint(c.stdout, overallHelp())
		return nil
	case 1:
	default:
		return usageErrorf("unexpected argument %q: help takes one COMMAND", fs.Arg(1))
	}
	name := fs.Arg(0)
	if _, ok := lookupTopic(helpName(name)); !ok {
		hint := "run 'tbstream help' for the list"
		if near := nearCommand(name); near != "" {
			hint = fmt.Sprintf("did you mean %q? (%s)", near, hint)
		}
		return &usageError{err: fmt.Errorf("unknown command %q; %s", name, hint), bare: true}
	}
	fmt.Fprint(c.stdout, topicHelp(helpName(name)))
	return nil
}
