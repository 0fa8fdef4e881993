package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A run directory outlives a daemon killed with SIGKILL: its FUSE mounts
// stay behind (the kernel answers ENOTCONN on them), and so do the pid
// file and status socket. The lock is what tells a live daemon from such
// leftovers: flock(2) locks are released when the holder dies, however it
// dies. Whoever holds the lock may clean the rest.

// The run directory's lock file, pid file and status socket. The lock's
// mode is 0600: a process that can open the lock can hold it, and keep
// every daemon off the run directory.
const (
	lockName   = "lock"
	pidName    = "pid"
	statusName = "status.sock"
	lockMode   = 0o600
	// statusMode lets any user connect to the status socket, which
	// answers a status request from anyone and every other request to
	// root alone (peerPrivileged): the status shows what Linux shows
	// every user of its sysfs and configfs, the others stop, slow or
	// look inside the daemon.
	statusMode = 0o666
)

// peerPrivileged says whether the process at the other end of the status
// socket connection c runs as root, or as the daemon's own user: its
// credentials as the kernel took them at connect(2) (SO_PEERCRED), which
// the peer cannot choose.
func peerPrivileged(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return false
	}
	return cred.Uid == 0 || cred.Uid == uint32(os.Geteuid())
}

// lockPath is the run directory's lock file.
func lockPath(run string) string { return filepath.Join(run, lockName) }

// pidPath is the run directory's pid file.
func pidPath(run string) string { return filepath.Join(run, pidName) }

// Owner returns the PID of the process that holds run's lock, or 0 when no
// process does (no daemon runs there, whatever the pid file says). Whether
// the lock is held is asked of flock(2) itself; the holder's PID is then
// found in /proc/locks by the lock file's inode, so a PID taken from a
// stale pid file, which may belong to anything by now, is never trusted.
// A run directory others could write is refused (CheckRunDir), and so is
// a lock that is a symlink or not a regular file: its holder would be
// whoever locks the file it names.
func Owner(run string) (int, error) {
	pid, _, err := owner(run)
	return pid, err
}

// owner is Owner, which also returns the lock file's stat (for
// checkDaemon) when a process holds it.
func owner(run string) (int, *unix.Stat_t, error) {
	dir, err := openRunDir(run, false)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	defer dir.Close()
	f, err := OpenIn(dir, lockName, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("lock of %s: %w", run, err)
	}
	defer f.Close()
	// A holder that exits between the flock and the read of /proc/locks
	// is not listed there: ask flock again.
	for try := 0; ; try++ {
		pid, st, err := lockOwner(f)
		if errors.Is(err, errLockUnlisted) && try < 3 {
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("lock of %s: %w", run, err)
		}
		return pid, st, nil
	}
}

// errLockUnlisted: the lock is held, but its holder is not in /proc/locks.
var errLockUnlisted = errors.New("held, but not listed in /proc/locks")

// lockOwner is one try of Owner on the open lock file f.
func lockOwner(f *os.File) (int, *unix.Stat_t, error) {
	err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, nil, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, nil, err
	}
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0, nil, err
	}
	defer locks.Close()
	pid, err := lockHolder(bufio.NewScanner(locks), unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if err == nil && pid == 0 {
		err = errLockUnlisted
	}
	return pid, &st, err
}

// lockHolder finds the FLOCK of the file (major:minor, ino) in the lines
// of /proc/locks, each like
//
//	1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF
//
// with the device numbers in hex. Blocked waiters ("1: -> FLOCK ...") are
// not holders, nor are shared (READ) locks: Owner's probe takes one, and
// the lock it found held is the daemon's exclusive one. Where stat(2)'s
// device is not the superblock's that /proc/locks prints (btrfs
// subvolumes), the inode alone decides, if it names a single holder.
func lockHolder(sc *bufio.Scanner, major, minor uint32, ino uint64) (int, error) {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	suffix := ":" + strconv.FormatUint(ino, 10)
	byIno := map[int]bool{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		if f[5] == want {
			return pid, nil
		}
		if strings.HasSuffix(f[5], suffix) {
			byIno[pid] = true
		}
	}
	if len(byIno) == 1 {
		for pid := range byIno {
			return pid, sc.Err()
		}
	}
	return 0, sc.Err()
}

// MountsUnder returns the mount points below dir (not dir itself, which may
// be a mount of the operator's), deepest first, as
// /proc/self/mountinfo lists them (field 5, with octal escapes).
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountsUnder(bufio.NewScanner(f), dir)
}

func parseMountsUnder(sc *bufio.Scanner, dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	var out []string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountPath(f[4])
		if strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first, so that no mount is detached from under another's
	// path first; the same point mounted twice appears twice.
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, sc.Err()
}

// unescapeMountPath undoes mountinfo's \ooo escapes (space, tab, newline
// and backslash).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CleanStale removes what a dead daemon left in run: its mounts (detached
// lazily, since a dead FUSE server's mount cannot be unmounted otherwise
// while anything still has it open), its status socket and its pid file.
// It must only be called with run's lock held, or after checking with
// Owner that nobody holds it. It returns what it removed. A run directory
// others could write is refused (CheckRunDir), and a status socket or pid
// file that is not a socket or regular file (a symlink, say) is left
// alone, with an error.
func CleanStale(run string) ([]string, error) {
	dir, err := openRunDir(run, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	var cleaned []string
	var errs []error
	// dir's name has its parents' symlinks resolved, as mountinfo
	// has them.
	mounts, err := MountsUnder(dir.Name())
	if err != nil {
		errs = append(errs, fmt.Errorf("list mounts: %w", err))
	}
	for _, mp := range mounts {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			continue
		}
		cleaned = append(cleaned, "mount "+mp)
	}
	for _, f := range []struct {
		name string
		kind uint32
	}{{statusName, unix.S_IFSOCK}, {pidName, unix.S_IFREG}} {
		removed, err := removeIn(dir, f.name, f.kind)
		if err != nil {
			errs = append(errs, err)
		}
		if removed {
			cleaned = append(cleaned, f.name)
		}
	}
	return cleaned, errors.Join(errs...)
}

// Shutdown stops the daemon of run, if one runs, and returns only when it
// has exited (its lock is free) and nothing of it is left: SIGTERM first,
// SIGKILL when it has not exited within grace, then CleanStale for what a
// killed daemon leaves. It returns what it did, for the operator. A lock
// holder that is not run's daemon (see checkDaemon) is never signalled.
func Shutdown(ctx context.Context, run string, grace time.Duration) ([]string, error) {
	var done []string
	pid, lock, err := owner(run)
	if err != nil {
		return nil, err
	}
	if pid != 0 {
		if err := signalDaemon(run, pid, lock, unix.SIGTERM); err != nil {
			return nil, err
		}
		if err := waitUnlocked(ctx, run, grace); err != nil {
			done = append(done, fmt.Sprintf("pid %d did not exit within %v of SIGTERM: killed", pid, grace))
			// Asked again: the daemon may have exited meanwhile,
			// and its PID gone to another process.
			now, lock, err := owner(run)
			switch {
			case err != nil:
				return done, err
			case now != 0 && now != pid:
				return done, fmt.Errorf("pid %d exited, and pid %d holds %s now: not signalled", pid, now, run)
			case now != 0:
				if err := signalDaemon(run, pid, lock, unix.SIGKILL); err != nil {
					return done, err
				}
			}
			if err := waitUnlocked(ctx, run, grace); err != nil {
				return done, fmt.Errorf("pid %d still holds %s after SIGKILL: %w", pid, run, err)
			}
		}
		done = append(done, fmt.Sprintf("stopped pid %d", pid))
	}
	cleaned, err := CleanStale(run)
	for _, c := range cleaned {
		done = append(done, "removed stale "+c)
	}
	return done, err
}

// signalDaemon sends sig to pid, which holds run's lock (lock), after
// checkDaemon has found it to be run's daemon. The process is pinned by a
// pidfd before the check, so that a PID reused meanwhile is not signalled
// in its place (the signal to the dead process fails with ESRCH, which
// is no error here: it has exited).
func signalDaemon(run string, pid int, lock *unix.Stat_t, sig unix.Signal) error {
	send := func() error { return unix.Kill(pid, sig) }
	pidfd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
		defer unix.Close(pidfd)
		send = func() error { return unix.PidfdSendSignal(pidfd, sig, nil, 0) }
	case errors.Is(err, unix.ESRCH):
		return nil
	case !errors.Is(err, unix.ENOSYS): // before Linux 5.3: kill(2)
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	if err := checkDaemon(pid, lock); err != nil {
		return fmt.Errorf("%s is locked by pid %d, which is not its tbstreamd (%w): not signalled", run, pid, err)
	}
	if err := send(); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	return nil
}

// checkDaemon says why pid, found holding the exclusive flock on the lock
// file lock, is not the daemon of that run directory (nil: it is). Three
// things must hold, each read from /proc/PID:
//
//   - it runs as this user (root), so a lock that another user managed to
//     take (the lock was readable once) gets nobody of theirs killed;
//   - it has the lock file itself open (a descriptor whose stat is the
//     lock's device and inode). /proc/locks names the process that took
//     the lock, which may have died while a descriptor it passed on still
//     holds it, and its PID been reused by anything; the descriptor is the
//     proof that this process, now, has this run directory's lock;
//   - its command line is a daemon's: `tbstreamd`/`tbstream daemon` with
//     -run-dir, or `tbstream pair-daemon`. Not a proof (any process can
//     say so), but it spares a root shell's `flock lock CMD` or a probe.
//
// The binary (/proc/PID/exe) is not compared with ours: an upgrade, a
// `go run` or a test binary runs daemons from other files, and a check
// that fails for them leaves daemons nobody can stop.
func checkDaemon(pid int, lock *unix.Stat_t) error {
	proc := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		return err
	}
	euid, ok := statusEUID(string(status))
	if !ok {
		return fmt.Errorf("no Uid line in %s/status", proc)
	}
	if euid != os.Geteuid() {
		return fmt.Errorf("it runs as uid %d", euid)
	}
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return err
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if !daemonCommand(args) {
		return fmt.Errorf("it runs %q", strings.Join(args, " "))
	}
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return err
	}
	for _, e := range fds {
		p := proc + "/fd/" + e.Name()
		// Only descriptors of a file named lock are stat'ed: a stat
		// through /proc follows the descriptor to its file, and one
		// on a FUSE mount of a stuck daemon would never answer.
		target, err := os.Readlink(p)
		if err != nil || filepath.Base(strings.TrimSuffix(target, " (deleted)")) != lockName {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Dev == lock.Dev && st.Ino == lock.Ino {
			return nil
		}
	}
	return errors.New("it does not have the lock file open")
}

// statusEUID reads the effective UID from /proc/PID/status, whose line
// is "Uid:\treal\teffective\tsaved\tfs".
func statusEUID(status string) (int, bool) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) < 2 {
				return 0, false
			}
			euid, err := strconv.Atoi(f[1])
			return euid, err == nil
		}
	}
	return 0, false
}

// daemonCommand says whether a command line (args[0] the program) runs a
// daemon: -run-dir (tbstreamd, tbstream daemon) or pair-daemon, in
// whichever spelling the flag package takes.
func daemonCommand(args []string) bool {
	for _, a := range args[min(1, len(args)):] {
		name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if a == "pair-daemon" || (strings.HasPrefix(a, "-") && name == "run-dir") {
			return true
		}
	}
	return false
}

// waitUnlocked waits until no process holds run's lock.
func waitUnlocked(ctx context.Context, run string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		pid, err := Owner(run)
		if err != nil {
			return err
		}
		if pid == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
