package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// With the FUSE fallback the nodes are files of <run>/dev, and `tbstream
// shell` must make them appear in /dev exactly while their streams exist.
// The daemon keeps that /dev: a tmpfs, <run>/dev-links, which every shell
// of the host binds over its /dev. It holds a link per entry of the real
// /dev (to RealDevDir, where the shell binds the real /dev first) and a
// link tbstreamN → <run>/dev/tbstreamN made at mkdir and removed at rmdir.
// Being one tmpfs, what the daemon changes every shell sees at once; a
// name with no stream is not there at all, so opening it gives ENOENT.

// DevLinksDir is the /dev that `tbstream shell` binds with the fallback.
func DevLinksDir(run string) string { return filepath.Join(run, "dev-links") }

// RealDevDir is where `tbstream shell` binds the real /dev before it binds
// DevLinksDir over /dev; the links of DevLinksDir point there.
func RealDevDir(run string) string { return filepath.Join(run, ".shadow-dev") }

// devLinks is a mounted DevLinksDir.
type devLinks struct {
	dir    string // the tmpfs
	real   string // RealDevDir
	target string // the fallback's mount, where tbstreamN are
	log    *slog.Logger
}

// mountDevLinks mounts DevLinksDir and fills it with a link per entry of
// the real /dev, except tbstream* (the streams add theirs).
func mountDevLinks(run, target string, log *slog.Logger) (*devLinks, error) {
	dir, err := makeSubdir(run, filepath.Base(DevLinksDir(run)))
	if err != nil {
		return nil, fmt.Errorf("device links: %w", err)
	}
	l := &devLinks{dir: dir, real: RealDevDir(run), target: target, log: log}
	if err := unix.Mount("tbstream-dev", l.dir, "tmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		return nil, fmt.Errorf("device links: mount tmpfs on %s: %w", l.dir, err)
	}
	entries, err := os.ReadDir("/dev")
	if err != nil {
		l.close()
		return nil, fmt.Errorf("device links: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tbstream") {
			continue
		}
		if err := os.Symlink(filepath.Join(l.real, e.Name()), filepath.Join(l.dir, e.Name())); err != nil {
			l.close()
			return nil, fmt.Errorf("device links: %w", err)
		}
	}
	return l, nil
}

// add links name to the fallback's file; whatever had that name (a file
// a user created by writing to the name before the stream existed, as
// root can on Linux's devtmpfs) is replaced.
func (l *devLinks) add(name string) error {
	p := filepath.Join(l.dir, name)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("device link %s: %w", name, err)
	}
	if err := os.Symlink(filepath.Join(l.target, name), p); err != nil {
		return fmt.Errorf("device link %s: %w", name, err)
	}
	return nil
}

func (l *devLinks) remove(name string) {
	if err := os.Remove(filepath.Join(l.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.log.Warn("cannot remove device link", "node", name, "err", err)
	}
}

// close detaches the tmpfs; shells that bound it keep their copy.
func (l *devLinks) close() error {
	if err := unix.Unmount(l.dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("device links: unmount %s: %w", l.dir, err)
	}
	return nil
}
