// Command tally reads the JSON event stream of `go test -json` on standard
// input, prints what a person needs to see (every failure with its output,
// every skip with its reason, package build errors) and ends with one line
//
//	tally: passed=N failed=M skipped=K
//
// that test/run.sh adds to its closing count. Subtests count individually.
// A package that fails without any failing test (a build error, a panic in
// TestMain, a timeout between tests) counts as one failure, so a broken
// package can never look like a package with nothing to run.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is the subset of test2json's TestEvent that tally reads.
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string
}

type counts struct{ passed, failed, skipped int }

type tally struct {
	out        io.Writer
	counts     counts
	output     map[string]*strings.Builder // package/test → accumulated output
	failedTest map[string]bool             // packages with at least one failed test
}

func key(pkg, test string) string { return pkg + "\x00" + test }

func (t *tally) record(e event) {
	switch e.Action {
	case "output", "build-output":
		pkg := e.Package
		if e.Action == "build-output" {
			pkg = e.ImportPath
		}
		k := key(pkg, e.Test)
		b := t.output[k]
		if b == nil {
			b = &strings.Builder{}
			t.output[k] = b
		}
		b.WriteString(e.Output)
	case "pass":
		if e.Test != "" {
			t.counts.passed++
		} else {
			fmt.Fprintf(t.out, "ok   %s\n", e.Package)
		}
		delete(t.output, key(e.Package, e.Test))
	case "skip":
		if e.Test == "" {
			delete(t.output, key(e.Package, ""))
			return
		}
		t.counts.skipped++
		fmt.Fprintf(t.out, "SKIP %s %s: %s\n", e.Package, e.Test, skipReason(t.output[key(e.Package, e.Test)]))
		delete(t.output, key(e.Package, e.Test))
	case "fail", "build-fail":
		pkg := e.Package
		if e.Action == "build-fail" {
			pkg = e.ImportPath
		}
		if e.Test != "" {
			t.counts.failed++
			t.failedTest[pkg] = true
			fmt.Fprintf(t.out, "FAIL %s %s\n%s", pkg, e.Test, text(t.output[key(pkg, e.Test)]))
		} else if !t.failedTest[pkg] {
			t.counts.failed++
			fmt.Fprintf(t.out, "FAIL %s (package)\n%s", pkg, text(t.output[key(pkg, "")]))
		}
		delete(t.output, key(pkg, e.Test))
	}
}

func text(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	return b.String()
}

// skipReason returns the last line that t.Skip printed, without the
// "--- SKIP" header and file:line prefix noise.
func skipReason(b *strings.Builder) string {
	var reason string
	for _, line := range strings.Split(text(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "=== ") || strings.HasPrefix(line, "--- SKIP") {
			continue
		}
		reason = line
	}
	if reason == "" {
		return "(no reason given)"
	}
	return reason
}

func run(in io.Reader, out io.Writer) (counts, error) {
	t := &tally{out: out, output: map[string]*strings.Builder{}, failedTest: map[string]bool{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// go test prints some errors (e.g. "no Go files") as plain text.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		t.record(e)
	}
	// Output left over belongs to runs that never finished (a crash of the
	// test binary); show it so the failure is explained.
	keys := make([]string, 0, len(t.output))
	for k, b := range t.output {
		if strings.TrimSpace(b.String()) != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "unfinished %s\n%s", strings.ReplaceAll(k, "\x00", " "), t.output[k].String())
	}
	return t.counts, sc.Err()
}

func main() {
	c, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tally: read: %v\n", err)
		c.failed++
	}
	fmt.Printf("tally: passed=%d failed=%d skipped=%d\n", c.passed, c.failed, c.skipped)
}
