package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// In `tbstream shell` the stream driver is always "loaded": the host's
// daemon serves it. Scripts written for the kernel run `modprobe
// thunderbolt_stream` first (often under set -e), so the shell puts a
// modprobe first on PATH that answers for thunderbolt_stream as Linux's
// would for a loaded module and hands every other module to the system's
// modprobe.

// shellBin is the directory of the shell's own commands, a tmpfs private
// to each shell's mount namespace.
func shellBin(run string) string { return filepath.Join(run, ".shell-bin") }

// realModprobe is the system's modprobe, found on PATH less any shell's
// own directory (a shell started from a shell), or "" when there is none.
func realModprobe() string {
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if filepath.Base(d) != ".shell-bin" {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "modprobe")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("/sbin/modprobe"); err == nil {
		return p
	}
	return ""
}

// modprobeScript is the shell's modprobe: real is the system's modprobe
// ("" if none), moddir the module's sysfs directory.
func modprobeScript(real, moddir string) string {
	return fmt.Sprintf("#!/bin/sh\nreal='%s'\nmoddir='%s'\n", strings.ReplaceAll(real, "'", `'\''`), moddir) + modprobeBody
}

// modprobeBody parses modprobe's command line as kmod does (short options
// may be combined; -a and -r take several modules; "-" and "_" are the same
// in module names), answers for thunderbolt_stream, and runs the real
// modprobe with what is left:
//
//	modprobe thunderbolt_stream        exit 0, nothing printed (already loaded)
//	  --first-time                     "Module already in kernel", exit 1
//	modprobe -r thunderbolt_stream     in use (refcnt > 0): kmod's FATAL line,
//	                                   exit 1; else what Linux would do (unload,
//	                                   with -v "rmmod thunderbolt_stream") and
//	                                   that tbstream does not, exit 0
const modprobeBody = `name=thunderbolt_stream
remove=0 all=0 quiet=0 verbose=0 first=0 mod= tb=0 others=0
n=$#
while [ "$n" -gt 0 ]; do
	a=$1; shift; n=$((n-1))
	case $a in
	-C|--config|-d|--dirname|-S|--set-version)
		set -- "$@" "$a"
		if [ "$n" -gt 0 ]; then set -- "$@" "$1"; shift; n=$((n-1)); fi
		continue;;
	--remove) remove=1;;
	--all) all=1;;
	--quiet) quiet=1;;
	--verbose) verbose=1;;
	--first-time) first=1;;
	--*) ;;
	-*)
		case $a in *r*) remove=1;; esac
		case $a in *a*) all=1;; esac
		case $a in *q*) quiet=1;; esac
		case $a in *v*) verbose=1;; esac;;
	*)
		if [ -z "$mod" ] || [ $all = 1 ] || [ $remove = 1 ]; then
			mod=$a
			if [ "$(printf %s "$a" | tr - _)" = $name ]; then tb=1; continue; fi
			others=$((others+1))
		elif [ $tb = 1 ] && [ $others = 0 ]; then
			continue # a parameter of thunderbolt_stream: it is loaded already
		fi;;
	esac
	set -- "$@" "$a"
done
if [ $tb = 1 ]; then
	if [ $remove = 1 ]; then
		refs=$(cat "$moddir/refcnt" 2>/dev/null || echo 0)
		if [ "$refs" -gt 0 ]; then
			[ $quiet = 1 ] || echo "modprobe: FATAL: Module $name is in use." >&2
			exit 1
		fi
		[ $verbose = 0 ] || echo "rmmod $name"
		[ $quiet = 1 ] || echo "modprobe: tbstream: $name not removed: Linux would unload it now (nothing uses it); here the host's daemon serves it (tbstream down stops it)" >&2
	elif [ $first = 1 ]; then
		[ $quiet = 1 ] || echo "modprobe: ERROR: could not insert '$name': Module already in kernel" >&2
		exit 1
	fi
	[ $others -gt 0 ] || exit 0
fi
if [ -z "$real" ]; then
	echo "modprobe: no modprobe on this system (only $name is served by tbstream)" >&2
	exit 1
fi
exec "$real" "$@"
`
