package daemon

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// nobody is the unprivileged user that owns what a test plants.
const nobody = 65534

// needRoot skips a test that must give a file to another user.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns files to uid 65534 (nobody)")
	}
}

// mkdir makes dir with exactly mode (chmod(2) bits, no umask), owned by
// uid (-1: ours).
func mkdir(t *testing.T, dir string, mode uint32, uid int) string {
	t.Helper()
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, unix.Chmod(dir, mode))
	if uid >= 0 {
		require.NoError(t, os.Lchown(dir, uid, uid))
	}
	return dir
}

// tempDir is t.TempDir with symlinks resolved, as run directories'
// names are.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	return dir
}

// outsideFile is a file a planted symlink points at, and what it held.
type outsideFile struct {
	path string
	data string
	mode os.FileMode
}

// plantTarget makes a file outside the run directory to point a symlink
// at.
func plantTarget(t *testing.T, dir, name string) outsideFile {
	t.Helper()
	f := outsideFile{path: filepath.Join(dir, name), data: "precious " + name + "\n", mode: 0o600}
	require.NoError(t, os.WriteFile(f.path, []byte(f.data), f.mode))
	return f
}

// requireUntouched fails unless f has its contents and mode still.
func (f outsideFile) requireUntouched(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(f.path)
	require.NoError(t, err)
	assert.Equal(t, f.data, string(b), "%s written to", f.path)
	st, err := os.Stat(f.path)
	require.NoError(t, err)
	assert.Equal(t, f.mode, st.Mode().Perm(), "%s chmod'ed", f.path)
}

func TestCheckRunDir(t *testing.T) {
	cases := []struct {
		name string
		root bool // chowns to nobody
		// setup makes the run directory under base and returns it.
		setup func(t *testing.T, base string) string
		// want is in the refusal, with the path (under base) it names;
		// "" if the run directory is fine.
		want, path string
	}{
		{"root's, 0755", false, func(t *testing.T, b string) string { return mkdir(t, b+"/run", 0o755, -1) }, "", ""},
		{"root's, 0700", false, func(t *testing.T, b string) string { return mkdir(t, b+"/run", 0o700, -1) }, "", ""},
		{"writable by all", false, func(t *testing.T, b string) string { return mkdir(t, b+"/run", 0o777, -1) },
			"is writable by others (mode 0777)", "/run"},
		{"writable by its group", false, func(t *testing.T, b string) string { return mkdir(t, b+"/run", 0o775, -1) },
			"is writable by others (mode 0775)", "/run"},
		{"sticky like /tmp, itself", false, func(t *testing.T, b string) string { return mkdir(t, b+"/run", 0o1777, -1) },
			"is writable by others (mode 1777)", "/run"},
		{"owned by nobody", true, func(t *testing.T, b string) string { return mkdir(t, b+"/run", 0o755, nobody) },
			"is owned by uid 65534", "/run"},
		{"a symlink to a good one", false, func(t *testing.T, b string) string {
			mkdir(t, b+"/real", 0o755, -1)
			require.NoError(t, os.Symlink(b+"/real", b+"/run"))
			return b + "/run"
		}, "is a symbolic link", "/run"},
		{"a regular file", false, func(t *testing.T, b string) string {
			require.NoError(t, os.WriteFile(b+"/run", nil, 0o644))
			return b + "/run"
		}, "is not a directory", "/run"},
		{"parent writable by all", false, func(t *testing.T, b string) string {
			mkdir(t, b+"/p", 0o777, -1)
			return mkdir(t, b+"/p/run", 0o755, -1)
		}, "is writable by others (mode 0777)", "/p"},
		{"parent sticky like /tmp", false, func(t *testing.T, b string) string {
			mkdir(t, b+"/p", 0o1777, -1)
			return mkdir(t, b+"/p/run", 0o755, -1)
		}, "", ""},
		{"parent owned by nobody", true, func(t *testing.T, b string) string {
			mkdir(t, b+"/p", 0o755, nobody)
			return mkdir(t, b+"/p/run", 0o755, -1)
		}, "is owned by uid 65534", "/p"},
		{"parent a symlink to a good one", false, func(t *testing.T, b string) string {
			mkdir(t, b+"/p", 0o755, -1)
			require.NoError(t, os.Symlink("p", b+"/link"))
			mkdir(t, b+"/p/run", 0o755, -1)
			return b + "/link/run"
		}, "", ""},
		{"parent a symlink of nobody's in a sticky directory", true, func(t *testing.T, b string) string {
			mkdir(t, b+"/tmp", 0o1777, -1)
			mkdir(t, b+"/p", 0o755, -1)
			mkdir(t, b+"/p/run", 0o755, -1)
			require.NoError(t, os.Symlink(b+"/p", b+"/tmp/link"))
			require.NoError(t, os.Lchown(b+"/tmp/link", nobody, nobody))
			return b + "/tmp/link/run"
		}, "is a symbolic link owned by uid 65534, not root", "/tmp/link"},
		{"parent a symlink into one writable by all", false, func(t *testing.T, b string) string {
			mkdir(t, b+"/p", 0o777, -1)
			mkdir(t, b+"/p/q", 0o755, -1)
			require.NoError(t, os.Symlink(b+"/p/q", b+"/link"))
			return mkdir(t, b+"/link/run", 0o755, -1)
		}, "is writable by others (mode 0777)", "/p"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root {
				needRoot(t)
			}
			base := tempDir(t)
			run := c.setup(t, base)
			err := CheckRunDir(run)
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			var unsafe *UnsafeDirError
			require.ErrorAs(t, err, &unsafe)
			assert.Equal(t, base+c.path, unsafe.Path)
			msg := err.Error()
			assert.Contains(t, msg, c.want)
			assert.True(t, strings.HasPrefix(msg, "run directory "+run), msg)
			assert.Contains(t, msg, "use a directory only")
			assert.NotContains(t, msg, "\n", "one line")
		})
	}
}

// MakeRunDir makes what is missing with mode 0755, and nothing in a
// parent it refuses.
func TestMakeRunDir(t *testing.T) {
	base := tempDir(t)
	run := filepath.Join(base, "a", "b", "run")
	dir, err := MakeRunDir(run)
	require.NoError(t, err)
	assert.Equal(t, run, dir.Name())
	require.NoError(t, dir.Close())
	for _, d := range []string{base + "/a", base + "/a/b", run} {
		st, err := os.Lstat(d)
		require.NoError(t, err)
		assert.True(t, st.IsDir())
		assert.Zero(t, st.Mode().Perm()&0o022, "%s: %v", d, st.Mode())
	}
	require.NoError(t, CheckRunDir(run))

	_, err = os.Stat(filepath.Join(base, "missing"))
	require.ErrorIs(t, CheckRunDir(filepath.Join(base, "missing")), fs.ErrNotExist, "CheckRunDir makes nothing")
	require.ErrorIs(t, err, fs.ErrNotExist)

	open := mkdir(t, base+"/open", 0o777, -1)
	_, err = MakeRunDir(filepath.Join(open, "x", "run"))
	var unsafe *UnsafeDirError
	require.ErrorAs(t, err, &unsafe)
	assert.Equal(t, open, unsafe.Path)
	assert.NoDirExists(t, filepath.Join(open, "x"), "made in a parent refused")
}

// OpenIn never opens what a name in the run directory points at, nor
// anything but a regular file of ours with one link.
func TestOpenInRefusesPlantedFiles(t *testing.T) {
	// How the daemon and tbstream up open their files.
	opens := []struct {
		what, name string
		flag       int
		perm       os.FileMode
	}{
		{"log", "log", os.O_CREATE | os.O_WRONLY | os.O_APPEND, 0o640},
		{"lock", lockName, os.O_RDWR | os.O_CREATE, lockMode},
		{"lock by Owner", lockName, os.O_RDONLY, 0},
		{"pid", pidName, os.O_WRONLY | os.O_CREATE | os.O_TRUNC, 0o644},
	}
	plants := []struct {
		what  string
		root  bool
		plant func(t *testing.T, run, name string, target outsideFile)
		want  string
	}{
		{"symlink to a file outside", false, func(t *testing.T, run, name string, target outsideFile) {
			require.NoError(t, os.Symlink(target.path, filepath.Join(run, name)))
		}, "is a symbolic link; not followed"},
		{"dangling symlink", false, func(t *testing.T, run, name string, target outsideFile) {
			require.NoError(t, os.Symlink(target.path+".new", filepath.Join(run, name)))
		}, "is a symbolic link; not followed"},
		{"hard link to a file outside", false, func(t *testing.T, run, name string, target outsideFile) {
			require.NoError(t, os.Link(target.path, filepath.Join(run, name)))
		}, "has 2 hard links"},
		{"FIFO", false, func(t *testing.T, run, name string, target outsideFile) {
			require.NoError(t, unix.Mkfifo(filepath.Join(run, name), 0o600))
		}, "is not a regular file (FIFO)"},
		{"directory", false, func(t *testing.T, run, name string, target outsideFile) {
			require.NoError(t, os.Mkdir(filepath.Join(run, name), 0o755))
		}, "is not a regular file (directory)"},
		{"file of nobody's", true, func(t *testing.T, run, name string, target outsideFile) {
			p := filepath.Join(run, name)
			require.NoError(t, os.WriteFile(p, nil, 0o644))
			require.NoError(t, os.Chown(p, nobody, nobody))
		}, "is owned by uid 65534"},
	}
	for _, p := range plants {
		for _, o := range opens {
			t.Run(p.what+"/"+o.what, func(t *testing.T) {
				if p.root {
					needRoot(t)
				}
				base := tempDir(t)
				outside := mkdir(t, base+"/outside", 0o755, -1)
				target := plantTarget(t, outside, o.name)
				run := mkdir(t, base+"/run", 0o755, -1)
				p.plant(t, run, o.name, target)
				dir, err := MakeRunDir(run)
				require.NoError(t, err)
				defer dir.Close()
				f, err := OpenIn(dir, o.name, o.flag, o.perm)
				if f != nil {
					f.Close()
				}
				require.Error(t, err)
				assert.Contains(t, err.Error(), p.want)
				assert.Contains(t, err.Error(), filepath.Join(run, o.name))
				target.requireUntouched(t)
				assert.NoFileExists(t, target.path+".new", "a dangling symlink's target created")
			})
		}
	}

	run := t.TempDir()
	dir, err := MakeRunDir(run)
	require.NoError(t, err)
	defer dir.Close()
	f, err := OpenIn(dir, "log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	require.NoError(t, err, "a new file")
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	require.NoError(t, err)
	assert.NotZero(t, flags&unix.FD_CLOEXEC, "close-on-exec")
	_, err = f.WriteString("line\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	st, err := os.Stat(filepath.Join(run, "log"))
	require.NoError(t, err)
	assert.Zero(t, st.Mode().Perm()&^0o640)
	for _, name := range []string{"", ".", "..", "a/b"} {
		_, err := OpenIn(dir, name, os.O_RDONLY, 0)
		assert.Error(t, err, "%q", name)
	}
}

// The daemon refuses a run directory of nobody's, whatever it holds, and
// in its own run directory a lock, pid file or status socket that is not
// one (a symlink to a file outside): nothing outside is touched.
func TestTakeRunDirRefusesPlantedFiles(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name  string
		root  bool
		owner int      // of the run directory (-1: ours)
		links []string // names planted as symlinks to files outside
		want  string
	}{
		{"run directory of nobody's", true, nobody, []string{lockName, pidName, statusName, "log"}, "is owned by uid 65534"},
		{"lock", false, -1, []string{lockName}, "is a symbolic link; not followed"},
		{"pid", false, -1, []string{pidName}, "is a symbolic link, not a regular file: left alone"},
		{"status socket", false, -1, []string{statusName}, "is a symbolic link, not a socket: left alone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.root {
				needRoot(t)
			}
			base := tempDir(t)
			outside := mkdir(t, base+"/outside", 0o755, -1)
			run := mkdir(t, base+"/run", 0o755, c.owner)
			var targets []outsideFile
			for _, name := range c.links {
				target := plantTarget(t, outside, name)
				targets = append(targets, target)
				require.NoError(t, os.Symlink(target.path, filepath.Join(run, name)))
			}
			d := &Daemon{opts: Options{RunDir: run}, log: quiet}
			err := d.takeRunDir()
			if d.lock != nil {
				d.lock.Close()
			}
			if d.dir != nil {
				d.dir.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			for _, target := range targets {
				target.requireUntouched(t)
			}
			entries, err := os.ReadDir(outside)
			require.NoError(t, err)
			assert.Len(t, entries, len(targets), "files made outside")
		})
	}
}

// Owner and Shutdown do not follow a lock that is a symlink: whoever
// locks its target (here a process that looks like a daemon of the run
// directory) is neither reported nor signalled.
func TestOwnerRefusesSymlinkedLock(t *testing.T) {
	base := t.TempDir()
	outside := mkdir(t, base+"/outside", 0o755, -1)
	target := plantTarget(t, outside, "lock")
	run := mkdir(t, base+"/run", 0o755, -1)
	require.NoError(t, os.Symlink(target.path, lockPath(run)))
	l := startLocker(t, target.path, "-run-dir", run)

	pid, err := Owner(run)
	require.Error(t, err)
	assert.Zero(t, pid)
	assert.Contains(t, err.Error(), "is a symbolic link; not followed")
	done, err := Shutdown(t.Context(), run, time.Second)
	require.Error(t, err)
	assert.Empty(t, done)
	assert.True(t, l.alive(), "the process locking the symlink's target was signalled")
	_, err = CleanStale(run)
	require.NoError(t, err, "the lock is not CleanStale's")
	target.requireUntouched(t)
}

// down of a run directory of nobody's signals nobody and removes nothing.
func TestShutdownRefusesUnsafeRunDir(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	run := mkdir(t, base+"/run", 0o755, nobody)
	require.NoError(t, os.WriteFile(lockPath(run), nil, 0o600))
	require.NoError(t, os.WriteFile(pidPath(run), []byte("1\n"), 0o644))
	l := startLocker(t, lockPath(run), "-run-dir", run)
	_, err := Shutdown(t.Context(), run, time.Second)
	var unsafe *UnsafeDirError
	require.ErrorAs(t, err, &unsafe)
	assert.True(t, l.alive())
	assert.FileExists(t, pidPath(run))
	_, err = CleanStale(run)
	require.ErrorAs(t, err, &unsafe)
	assert.FileExists(t, pidPath(run))
}

func TestCheckSocket(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, checkSocket(filepath.Join(dir, "missing")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	require.ErrorContains(t, checkSocket(filepath.Join(dir, "file")), "not a socket")
	require.NoError(t, os.Symlink("/dev/log", filepath.Join(dir, "link")))
	require.ErrorContains(t, checkSocket(filepath.Join(dir, "link")), "is a symbolic link")
	ln, err := net.Listen("unix", filepath.Join(dir, "sock"))
	require.NoError(t, err)
	defer ln.Close()
	require.NoError(t, checkSocket(filepath.Join(dir, "sock")))
	_, err = ask(dir, requestStatus)
	require.ErrorIs(t, err, fs.ErrNotExist, "no status socket")
	require.NoError(t, os.Symlink(filepath.Join(dir, "sock"), StatusPath(dir)))
	_, err = ask(dir, requestStatus)
	require.ErrorContains(t, err, "is a symbolic link", "a status socket that is a symlink is not dialled")
	require.False(t, errors.Is(err, fs.ErrNotExist))
}
