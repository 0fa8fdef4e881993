// Command tally reads the JSON event stream of `go test -json` on standard
// input, prints what a person needs to see (every failure with its output,
// every skip with its reason, build errors) and ends with one line
//
//	tally: passed=N failed=M skipped=K
//
// that test/run.sh adds to its closing count. What counts:
//
//   - A test without subtests counts once, as passed, failed or skipped. A
//     test with subtests counts as its subtests only, except that a parent
//     that fails while none of its subtests failed (a t.Fatal after its
//     t.Run calls) counts as one failure of its own.
//   - A build failure counts once, however many packages it breaks: a
//     package whose test binary did not build is covered by the build-fail
//     it names.
//   - A package that fails without a failing test (a panic in TestMain, a
//     timeout, a crash) counts as one failure, and so does a package that
//     passes without running a single test (a TestMain that never calls
//     m.Run): neither may look like a package with nothing to do.
//   - A package that started and never finished (the stream was cut off)
//     counts as one failure.
//   - A package without test files counts nothing; it is listed.
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
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string // a package's fail caused by this build failure
}

type counts struct{ passed, failed, skipped int }

// pkgState is what tally knows of one package's run.
type pkgState struct {
	ran      int             // tests that reached pass, fail or skip
	failed   bool            // a test of it failed
	finished bool            // the package's own pass, fail or skip arrived
	parents  map[string]bool // tests that have subtests
	failures map[string]bool // tests with a failed descendant
}

type tally struct {
	out         io.Writer
	counts      counts
	output      map[string]*strings.Builder // package/test → accumulated output
	pkgs        map[string]*pkgState
	order       []string        // packages in the order they started
	buildFailed map[string]bool // build-fail ImportPaths already counted
	noTestFiles []string
}

func key(pkg, test string) string { return pkg + "\x00" + test }

func (t *tally) pkg(name string) *pkgState {
	p := t.pkgs[name]
	if p == nil {
		p = &pkgState{parents: map[string]bool{}, failures: map[string]bool{}}
		t.pkgs[name] = p
		t.order = append(t.order, name)
	}
	return p
}

// take returns and forgets the output gathered for pkg/test.
func (t *tally) take(pkg, test string) string {
	k := key(pkg, test)
	b := t.output[k]
	delete(t.output, k)
	if b == nil {
		return ""
	}
	return b.String()
}

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
	case "build-fail":
		if !t.buildFailed[e.ImportPath] {
			t.buildFailed[e.ImportPath] = true
			t.counts.failed++
			fmt.Fprintf(t.out, "FAIL %s (build)\n%s", e.ImportPath, t.take(e.ImportPath, ""))
		}
	case "start":
		t.pkg(e.Package)
	case "pass", "fail", "skip":
		if e.Test != "" {
			t.testDone(e)
		} else {
			t.packageDone(e)
		}
	}
}

// testDone counts a test's result unless it is a parent that its subtests
// stand for.
func (t *tally) testDone(e event) {
	p := t.pkg(e.Package)
	p.ran++
	// Subtests end before their parents: mark the ancestors now.
	for name := e.Test; strings.Contains(name, "/"); {
		name = name[:strings.LastIndex(name, "/")]
		p.parents[name] = true
		if e.Action == "fail" {
			p.failures[name] = true
		}
	}
	out := t.take(e.Package, e.Test)
	parent := p.parents[e.Test]
	switch e.Action {
	case "pass":
		if !parent {
			t.counts.passed++
		}
	case "skip":
		if !parent {
			t.counts.skipped++
			fmt.Fprintf(t.out, "SKIP %s %s: %s\n", e.Package, e.Test, skipReason(out))
		}
	case "fail":
		p.failed = true
		if parent && p.failures[e.Test] {
			return // its failing subtests were counted and printed
		}
		t.counts.failed++
		fmt.Fprintf(t.out, "FAIL %s %s\n%s", e.Package, e.Test, out)
	}
}

func (t *tally) packageDone(e event) {
	p := t.pkg(e.Package)
	p.finished = true
	out := t.take(e.Package, "")
	switch {
	case e.Action == "skip":
		t.noTestFiles = append(t.noTestFiles, e.Package)
	case e.Action == "fail" && e.FailedBuild != "":
		if !t.buildFailed[e.FailedBuild] {
			t.buildFailed[e.FailedBuild] = true
			t.counts.failed++
			fmt.Fprintf(t.out, "FAIL %s (build of %s)\n%s", e.Package, e.FailedBuild, out)
		}
	case e.Action == "fail":
		if !p.failed {
			t.counts.failed++
			fmt.Fprintf(t.out, "FAIL %s (package: failed outside any test)\n%s", e.Package, out)
		}
	case p.ran == 0:
		t.counts.failed++
		fmt.Fprintf(t.out, "FAIL %s (package: passed without running a test; does TestMain call m.Run?)\n%s", e.Package, out)
	default:
		fmt.Fprintf(t.out, "ok   %s\n", e.Package)
	}
}

// skipReason returns the last line that t.Skip printed, without the
// "--- SKIP" header.
func skipReason(out string) string {
	var reason string
	for _, line := range strings.Split(out, "\n") {
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
	t := &tally{out: out, output: map[string]*strings.Builder{}, pkgs: map[string]*pkgState{}, buildFailed: map[string]bool{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// go prints some errors (a bad package pattern) as plain text.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		t.record(e)
	}
	for _, name := range t.order {
		if !t.pkgs[name].finished {
			t.counts.failed++
			fmt.Fprintf(out, "FAIL %s (package: never finished; the run was cut off)\n", name)
		}
	}
	// Output left over belongs to tests that never finished (a crash or
	// timeout of the test binary); show it so the failure is explained.
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
	if len(t.noTestFiles) > 0 {
		fmt.Fprintf(out, "no test files: %s\n", strings.Join(t.noTestFiles, " "))
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
