package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Run directories are root's alone. Root's tools create, append to,
// chmod, lock and remove files there, mount file systems on its
// directories and signal the process that holds its lock. Whoever else can
// write the directory, or one of its parents, can put a symlink in place
// of any of those names (log → /etc/shadow, lock → a file another service
// locks) and have root do it to a file of their choosing. So, as OpenSSH's
// StrictModes refuses a home directory others can write, a run directory
// is refused unless it:
//
//   - is a directory itself, not a symlink to one (lstat);
//   - is owned by root (by the user running the daemon, when not root);
//   - is writable by nobody else (no group or other write bit);
//
// and each of its parents, symlinks in the path resolved (each symlink
// root's), is a directory owned by root (or that user) and writable by
// nobody else, unless it has the sticky bit (/tmp): there others cannot
// rename or remove what is not theirs. The check refuses with one line
// that names the directory, what is wrong and the fix (UnsafeDirError).
//
// Within a checked directory nobody else can create, rename or remove
// names. Files are still opened with openat(2) below the directory's own
// descriptor (O_DIRECTORY|O_NOFOLLOW, checked with fstat) and O_NOFOLLOW,
// and must be regular files of root's with one link: what a directory that
// was once unsafe may still hold is refused, not followed.

// UnsafeDirError is a run directory refused (see above).
type UnsafeDirError struct {
	Dir     string // the run directory
	Path    string // what is wrong: Dir or one of its parents
	Problem string // "is writable by others (mode 0777)"
	// Example is a directory to use instead, as the command's user gives
	// it ("-run /run/tbstream"); "" suggests one under /run.
	Example string
}

func (e *UnsafeDirError) Error() string {
	what := "run directory " + e.Dir
	if e.Path != e.Dir {
		what += ": " + e.Path
	}
	example := e.Example
	if example == "" {
		example = "one under /run"
	}
	who := "root"
	if os.Geteuid() != 0 {
		who = "you"
	}
	return fmt.Sprintf("%s %s; use a directory only %s can write, e.g. %s", what, e.Problem, who, example)
}

// errSymlink is a name opened without following it that is a symlink.
var errSymlink = errors.New("is a symbolic link; not followed")

// maxSymlinks bounds the symlinks resolved in a run directory's parents,
// as the kernel's ELOOP does.
const maxSymlinks = 40

// CheckRunDir checks the run directory dir (see above) without changing
// anything: nil if it is safe, an *UnsafeDirError if not, an error
// satisfying errors.Is(err, fs.ErrNotExist) if it (or a parent) is missing.
func CheckRunDir(dir string) error {
	f, err := openRunDir(dir, false)
	if err != nil {
		return err
	}
	return f.Close()
}

// MakeRunDir opens the run directory dir, creating it and missing parents
// (mode 0755, each checked before the next is made in it) first, and
// refuses it unless it is safe (see above). The *os.File is the checked
// directory, named by its path with the parents' symlinks resolved;
// OpenIn opens its files.
func MakeRunDir(dir string) (*os.File, error) {
	return openRunDir(dir, true)
}

// openRunDir checks dir's parents, creating those missing with create,
// then dir itself, and opens it.
func openRunDir(dir string, create bool) (*os.File, error) {
	if dir == "" {
		return nil, errors.New("no run directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("run directory %s: %w", dir, err)
	}
	euid := uint32(os.Geteuid())
	if abs == "/" {
		return nil, &UnsafeDirError{Dir: dir, Path: dir, Problem: "is the root directory"}
	}
	parent, err := resolveParents(dir, filepath.Dir(abs), euid, create)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(parent, filepath.Base(abs))
	if create {
		if err := unix.Mkdir(path, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, &fs.PathError{Op: "mkdir", Path: path, Err: err}
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var st unix.Stat_t
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			if unix.Lstat(path, &st) == nil {
				return nil, &UnsafeDirError{Dir: dir, Path: dir, Problem: dirProblem(&st, euid, false)}
			}
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if problem := dirProblem(&st, euid, false); problem != "" {
		unix.Close(fd)
		return nil, &UnsafeDirError{Dir: dir, Path: dir, Problem: problem}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// resolveParents walks parent (absolute) from / as the kernel would,
// symlinks resolved, checking each directory on the way as a parent of
// the run directory dir, and returns the path it resolved to. With create
// it makes what is missing (mode 0755) and checks it.
func resolveParents(dir, parent string, euid uint32, create bool) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat("/", &st); err != nil {
		return "", &fs.PathError{Op: "lstat", Path: "/", Err: err}
	}
	if problem := dirProblem(&st, euid, true); problem != "" {
		return "", &UnsafeDirError{Dir: dir, Path: "/", Problem: problem}
	}
	cur := "/"
	todo := strings.Split(parent, "/")
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur has no symlink left in it
			continue
		}
		next := filepath.Join(cur, name)
		err := unix.Lstat(next, &st)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdir(next, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				err = unix.Lstat(next, &st)
			}
		}
		if err != nil {
			return "", &fs.PathError{Op: "lstat", Path: next, Err: err}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// The link's directory, cur, was checked: only root
			// can change where it points, or, in a sticky one,
			// its owner, who must be root too.
			if st.Uid != 0 && st.Uid != euid {
				return "", &UnsafeDirError{Dir: dir, Path: next, Problem: fmt.Sprintf("is a symbolic link owned by uid %d, not %s", st.Uid, ownerName(euid))}
			}
			if links++; links > maxSymlinks {
				return "", &fs.PathError{Op: "lstat", Path: next, Err: unix.ELOOP}
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		if problem := dirProblem(&st, euid, true); problem != "" {
			return "", &UnsafeDirError{Dir: dir, Path: next, Problem: problem}
		}
		cur = next
	}
	return cur, nil
}

// dirProblem says what makes st unfit as a run directory, or with parent
// as one of its parents ("" if nothing).
func dirProblem(st *unix.Stat_t, euid uint32, parent bool) string {
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return "is a symbolic link"
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return "is not a directory"
	case st.Uid != 0 && st.Uid != euid:
		return fmt.Sprintf("is owned by uid %d, not %s", st.Uid, ownerName(euid))
	case st.Mode&0o022 != 0 && !(parent && st.Mode&unix.S_ISVTX != 0):
		return fmt.Sprintf("is writable by others (mode %04o)", st.Mode&0o7777)
	}
	return ""
}

func ownerName(euid uint32) string {
	if euid == 0 {
		return "root"
	}
	return fmt.Sprintf("root or uid %d", euid)
}

// OpenIn opens name, a file in the checked directory dir (MakeRunDir),
// with flag (os.O_*) and, when it creates the file, perm. It never
// follows a symlink (O_NOFOLLOW: one at name is refused) and refuses what
// is not a regular file of root's (or this user's) with a single link, so
// that nothing outside dir is opened, whatever was left in it. The file
// is close-on-exec, as Go's own opens are.
func OpenIn(dir *os.File, name string, flag int, perm os.FileMode) (*os.File, error) {
	path := filepath.Join(dir.Name(), name)
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errors.New("not a name in the directory")}
	}
	// O_NONBLOCK: a FIFO at name must be refused, not waited on.
	dirfd := int(dir.Fd())
	defer runtime.KeepAlive(dir)
	// O_TRUNC would truncate at open, before the checks: a hard link to
	// a file outside would be emptied. It is done after them.
	trunc := flag&os.O_TRUNC != 0
	flag &^= os.O_TRUNC
	fd, err := unix.Openat(dirfd, name, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, uint32(perm.Perm()))
	if err != nil {
		// ELOOP (a symlink), EISDIR, ENXIO (a FIFO nobody reads):
		// say what is there.
		var st unix.Stat_t
		if !errors.Is(err, unix.ENOENT) && unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			if problem := fileProblem(&st); problem != nil {
				err = problem
			}
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	if err == nil {
		err = fileProblem(&st)
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err == nil && trunc {
		err = unix.Ftruncate(fd, 0)
	}
	if err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// fileProblem refuses what OpenIn must not open.
func fileProblem(st *unix.Stat_t) error {
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return errSymlink
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("is not a regular file (%s)", fileType(st.Mode))
	case st.Uid != 0 && st.Uid != euid:
		return fmt.Errorf("is owned by uid %d, not %s", st.Uid, ownerName(euid))
	case st.Nlink != 1:
		// A hard link made while the directory was writable by
		// others may name any file of root's.
		return fmt.Errorf("has %d hard links", st.Nlink)
	}
	return nil
}

// fileType names the file type of a stat mode, for errors.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return "unknown type"
}

// makeSubdir makes name (mode 0755) in the run directory run unless it
// exists, and returns its path. It must be a directory of root's that
// nobody else can write, not a symlink: the daemon mounts on it.
func makeSubdir(run, name string) (string, error) {
	dir, err := openRunDir(run, false)
	if err != nil {
		return "", err
	}
	defer dir.Close()
	path := filepath.Join(dir.Name(), name)
	fd := int(dir.Fd())
	if err := unix.Mkdirat(fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", &fs.PathError{Op: "mkdir", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	if problem := dirProblem(&st, uint32(os.Geteuid()), false); problem != "" {
		return "", fmt.Errorf("%s %s", path, problem)
	}
	return path, nil
}

// removeIn removes name from the checked directory dir if it is a file of
// type kind (unix.S_IFSOCK, unix.S_IFREG): what a daemon leaves. It says
// whether it removed it; a name of another type (a symlink, say) is left
// alone with an error, never followed.
func removeIn(dir *os.File, name string, kind uint32) (bool, error) {
	path := filepath.Join(dir.Name(), name)
	fd := int(dir.Fd())
	defer runtime.KeepAlive(dir)
	var st unix.Stat_t
	err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != kind {
		return false, fmt.Errorf("%s is a %s, not a %s: left alone", path, fileType(st.Mode), fileType(kind))
	}
	if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, &fs.PathError{Op: "remove", Path: path, Err: err}
	}
	return true, nil
}

// checkSocket refuses a unix socket path that exists and is not a socket
// (a symlink included): connect(2) would follow it. A missing path is
// not refused.
func checkSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSocket == 0 {
		what := "not a socket"
		if st.Mode()&fs.ModeSymlink != 0 {
			what = errSymlink.Error()
		}
		return fmt.Errorf("%s %s", path, what)
	}
	return nil
}
