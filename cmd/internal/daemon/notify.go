package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The daemon tells its service manager when it is ready and when it stops,
// by the sd_notify(3) protocol: a service of Type=notify (the systemd unit
// cmd/tbstreamd/systemd/tbstreamd@.service) finds in NOTIFY_SOCKET the
// address of a unix datagram socket, a path or, with a leading '@', a name
// in the abstract namespace, and sends it datagrams of newline-separated
// VAR=VALUE lines: READY=1 once the host serves (configfs mounted, devices
// served, status socket listening), STOPPING=1 when it begins to shut
// down, STATUS=... for `systemctl status`. No library: one datagram per
// message, written with the net package.

// NotifySocketEnv is the environment variable that names the service
// manager's notification socket.
const NotifySocketEnv = "NOTIFY_SOCKET"

// notifier sends sd_notify messages; the zero notifier (no service manager)
// sends nothing.
type notifier struct {
	addr string // the socket: a path, or "@name" (abstract); "" for none
}

// notifierFromEnv reads NOTIFY_SOCKET and removes it from the environment,
// so that no process this one starts (a shell's mount helper, say) takes
// the daemon's notifications for its own.
func notifierFromEnv() notifier {
	addr := os.Getenv(NotifySocketEnv)
	os.Unsetenv(NotifySocketEnv)
	return notifier{addr: addr}
}

// enabled says whether a service manager listens.
func (n notifier) enabled() bool { return n.addr != "" }

// send sends one message of VAR=VALUE lines. A STATUS value's newlines
// would end the assignment early: callers pass one line each.
func (n notifier) send(lines ...string) error {
	if !n.enabled() {
		return nil
	}
	// systemd also accepts vsock:CID:PORT (for a VM's manager), which
	// this daemon, run on the host it serves, never gets.
	if n.addr[0] != '/' && n.addr[0] != '@' {
		return fmt.Errorf("%s=%q: want an absolute path or @name", NotifySocketEnv, n.addr)
	}
	// The net package takes a leading '@' as the abstract namespace
	// (a leading NUL byte in sockaddr_un), as sd_notify does.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify the service manager: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify the service manager: %w", err)
	}
	return nil
}

// statusLine makes s one line for STATUS=.
func statusLine(s string) string {
	return "STATUS=" + strings.Join(strings.Fields(s), " ")
}

// notifyReady tells the service manager that d serves.
func (d *Daemon) notifyReady(n notifier) {
	status := fmt.Sprintf("serving %s (devices: %s)", d.opts.RunDir, d.deviceKind())
	if err := n.send("READY=1", statusLine(status)); err != nil {
		d.log.Warn("cannot tell the service manager that the host is ready", "err", err)
	}
}

// notifyStopping tells the service manager that d begins to stop.
func (d *Daemon) notifyStopping(n notifier) {
	if err := n.send("STOPPING=1", statusLine("stopping: unmounting "+d.opts.RunDir)); err != nil {
		d.log.Warn("cannot tell the service manager that the host stops", "err", err)
	}
}

// JournalStreamEnv names the environment variable systemd sets when a
// service's stdout or stderr is a stream to the journal: "DEV:INODE" of
// that stream.
const JournalStreamEnv = "JOURNAL_STREAM"

// toJournal says whether f is the journal's stream that JOURNAL_STREAM
// (value) names: the variable alone is not enough, since it is inherited
// by processes whose output went elsewhere (systemd.exec(5)).
func toJournal(value string, f *os.File) bool {
	devs, inos, ok := strings.Cut(value, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devs, 10, 64)
	ino, err2 := strconv.ParseUint(inos, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// journalLogger returns l without the time of each record when stderr,
// where the daemon logs, goes to the journal, which stamps every line
// itself; otherwise l.
func journalLogger(l *slog.Logger) *slog.Logger {
	if l == nil || !toJournal(os.Getenv(JournalStreamEnv), os.Stderr) {
		return l
	}
	return slog.New(untimedHandler{l.Handler()})
}

// untimedHandler passes records on with a zero time, which slog's
// handlers leave out.
type untimedHandler struct{ slog.Handler }

func (h untimedHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	return h.Handler.Handle(ctx, r)
}

func (h untimedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return untimedHandler{h.Handler.WithAttrs(attrs)}
}

func (h untimedHandler) WithGroup(name string) slog.Handler {
	return untimedHandler{h.Handler.WithGroup(name)}
}
