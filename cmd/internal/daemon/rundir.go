package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// lockPath is the run directory's lock file.
func lockPath(run string) string { return filepath.Join(run, "lock") }

// pidPath is the run directory's pid file.
func pidPath(run string) string { return filepath.Join(run, "pid") }

// Owner returns the PID of the process that holds run's lock, or 0 when no
// process does (no daemon runs there, whatever the pid file says). Whether
// the lock is held is asked of flock(2) itself; the holder's PID is then
// found in /proc/locks by the lock file's inode, so a PID taken from a
// stale pid file, which may belong to anything by now, is never trusted.
func Owner(run string) (int, error) {
	f, err := os.Open(lockPath(run))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("lock of %s: %w", run, err)
	}
	defer f.Close()
	// A holder that exits between the flock and the read of /proc/locks
	// is not listed there: ask flock again.
	for try := 0; ; try++ {
		pid, err := lockOwner(f)
		if errors.Is(err, errLockUnlisted) && try < 3 {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("lock of %s: %w", run, err)
		}
		return pid, nil
	}
}

// errLockUnlisted: the lock is held, but its holder is not in /proc/locks.
var errLockUnlisted = errors.New("held, but not listed in /proc/locks")

// lockOwner is one try of Owner on the open lock file f.
func lockOwner(f *os.File) (int, error) {
	err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0, err
	}
	defer locks.Close()
	pid, err := lockHolder(bufio.NewScanner(locks), unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if err == nil && pid == 0 {
		err = errLockUnlisted
	}
	return pid, err
}

// lockHolder finds the FLOCK of the file (major:minor, ino) in the lines
// of /proc/locks, each like
//
//	1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF
//
// with the device numbers in hex. Blocked waiters ("1: -> FLOCK ...") are
// not holders. Where stat(2)'s device is not the superblock's that
// /proc/locks prints (btrfs subvolumes), the inode alone decides, if it
// names a single holder.
func lockHolder(sc *bufio.Scanner, major, minor uint32, ino uint64) (int, error) {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	suffix := ":" + strconv.FormatUint(ino, 10)
	byIno := map[int]bool{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" {
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

// mountsUnder returns the mount points below dir (not dir itself, which may
// be a mount of the operator's), deepest first, as
// /proc/self/mountinfo lists them (field 5, with octal escapes).
func mountsUnder(dir string) ([]string, error) {
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
// Owner that nobody holds it. It returns what it removed.
func CleanStale(run string) ([]string, error) {
	abs, err := filepath.Abs(run)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	var cleaned []string
	var errs []error
	mounts, err := mountsUnder(abs)
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
	for _, p := range []string{StatusPath(run), pidPath(run)} {
		if err := os.Remove(p); err == nil {
			cleaned = append(cleaned, filepath.Base(p))
		} else if !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return cleaned, errors.Join(errs...)
}

// Shutdown stops the daemon of run, if one runs, and returns only when it
// has exited (its lock is free) and nothing of it is left: SIGTERM first,
// SIGKILL when it has not exited within grace, then CleanStale for what a
// killed daemon leaves. It returns what it did, for the operator.
func Shutdown(ctx context.Context, run string, grace time.Duration) ([]string, error) {
	var done []string
	pid, err := Owner(run)
	if err != nil {
		return nil, err
	}
	if pid != 0 {
		if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("stop pid %d: %w", pid, err)
		}
		if err := waitUnlocked(ctx, run, grace); err != nil {
			done = append(done, fmt.Sprintf("pid %d did not exit within %v of SIGTERM: killed", pid, grace))
			unix.Kill(pid, unix.SIGKILL)
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
