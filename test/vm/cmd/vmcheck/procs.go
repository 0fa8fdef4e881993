package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// proc is what /proc says of one process.
type proc struct {
	pid, ppid int
	state     string // from /proc/PID/stat: R, S, D, T, Z, ...
	comm      string
	args      string
}

// readStat reads a /proc/.../stat file: "pid (comm) state ppid ...", where
// comm may hold spaces and parentheses.
func readStat(path string) (comm, state string, ppid int, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", 0, false
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return "", "", 0, false
	}
	rest := strings.Fields(s[close+1:])
	if len(rest) < 2 {
		return "", "", 0, false
	}
	ppid, _ = strconv.Atoi(rest[1])
	return s[open+1 : close], rest[0], ppid, true
}

func readProc(pid int) (proc, bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	comm, state, ppid, ok := readStat(filepath.Join(dir, "stat"))
	if !ok {
		return proc{}, false
	}
	cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	args := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	return proc{pid: pid, ppid: ppid, state: state, comm: comm, args: args}, true
}

func allProcs() []proc {
	entries, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if p, ok := readProc(pid); ok {
				ps = append(ps, p)
			}
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].pid < ps[j].pid })
	return ps
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}

// procs prints every user process of the guest with its state, and for
// every thread where the kernel has it parked (wchan) and its kernel
// stack: where a stuck read(2), write(2) or open(2) waits. Kernel threads
// (no command line) are left out.
func procs(w io.Writer) {
	for _, p := range allProcs() {
		if p.args == "" {
			continue
		}
		dir := filepath.Join("/proc", strconv.Itoa(p.pid))
		fmt.Fprintf(w, "pid %d ppid %d state %s %s: %s\n", p.pid, p.ppid, p.state, p.comm, p.args)
		tasks, _ := os.ReadDir(filepath.Join(dir, "task"))
		for _, t := range tasks {
			tdir := filepath.Join(dir, "task", t.Name())
			_, state, _, _ := readStat(filepath.Join(tdir, "stat"))
			fmt.Fprintf(w, "  task %s state %s wchan %s\n", t.Name(), state, firstLine(filepath.Join(tdir, "wchan")))
			if b, err := os.ReadFile(filepath.Join(tdir, "stack")); err == nil {
				for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
					if line != "" {
						fmt.Fprintf(w, "    %s\n", line)
					}
				}
			}
		}
	}
}

// killTree sends SIGCONT and then SIGKILL to root and every descendant, so
// that a stuck step leaves nothing behind that holds a device open.
func killTree(root int) int {
	children := map[int][]int{}
	for _, p := range allProcs() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var tree []int
	var walk func(int)
	walk = func(pid int) {
		tree = append(tree, pid)
		for _, c := range children[pid] {
			walk(c)
		}
	}
	walk(root)
	for _, pid := range tree {
		syscall.Kill(pid, syscall.SIGCONT)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(tree)
}
