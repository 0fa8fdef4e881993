package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testdata/gotest.json is real output of
//
//	cd testdata/fixture && go test -trimpath -count=1 -json -timeout 2s ./...
//
// over a module made to hold every shape tally must count: a broken
// package and one that imports it, a test file that does not compile, a
// TestMain that never calls m.Run, a package without test files, a panic,
// a timeout inside a subtest, nested subtests, skips and parents that
// fail on their own. fixtureCounts is what the package doc's rules give:
//
//	passed: fail (TestParentOfFailure/ok, TestParentFailsItself/ok),
//	        panics (TestBefore), pass (TestLeaf, TestParent/one,
//	        TestParent/two/deep, TestParent/two/deeper), timeout (TestQuick)
//	failed: broken (build, once for broken and dependent), buildfail
//	        (build), fail (TestFails, TestParentOfFailure/bad,
//	        TestParentFailsItself), nomain (no test ran), panics
//	        (TestPanics), timeout (package)
//	skipped: fail (TestSubSkipped/skipped), pass (TestSkipped), skipall
//	        (TestOnlySkip)
var fixtureCounts = counts{passed: 8, failed: 8, skipped: 3}

func tallyOf(t *testing.T, stream []byte) (counts, string) {
	t.Helper()
	var out strings.Builder
	c, err := run(bytes.NewReader(stream), &out)
	require.NoError(t, err)
	return c, out.String()
}

func TestCapturedRun(t *testing.T) {
	stream, err := os.ReadFile("testdata/gotest.json")
	require.NoError(t, err)
	c, out := tallyOf(t, stream)
	require.Equal(t, fixtureCounts, c, out)
	for _, want := range []string{
		"FAIL fixture/broken (build)\n# fixture/broken\nbroken/broken.go:3:27: cannot use",
		"FAIL fixture/buildfail [fixture/buildfail.test] (build)\n",
		"undefined: undefinedThing",
		"FAIL fixture/fail TestFails\n",
		"fail_test.go:5: boom",
		"FAIL fixture/fail TestParentOfFailure/bad\n",
		"FAIL fixture/fail TestParentFailsItself\n",
		"parent broke after its subtests",
		"SKIP fixture/fail TestSubSkipped/skipped: fail_test.go:18: sub reason\n",
		"SKIP fixture/pass TestSkipped: pass_test.go:15: needs a USB4 NHI\n",
		"SKIP fixture/skipall TestOnlySkip: skipall_test.go:5: needs root\n",
		"FAIL fixture/nomain (package: passed without running a test",
		"FAIL fixture/panics TestPanics\n",
		"assignment to entry in nil map",
		"FAIL fixture/timeout (package: failed outside any test)\n",
		"unfinished fixture/timeout TestHangs/sub\n=== RUN   TestHangs/sub\npanic: test timed out after 2s",
		"ok   fixture/pass\n",
		"ok   fixture/skipall\n",
		"no test files: fixture/notestfiles\n",
	} {
		require.Contains(t, out, want)
	}
	for _, unwanted := range []string{
		"fixture/dependent", // its failure is broken's build, counted there
		"FAIL fixture/fail TestParentOfFailure\n",
		"FAIL fixture/fail (package",
		"FAIL fixture/panics (package",
		"fixture/pass TestParent\n",
	} {
		require.NotContains(t, out, unwanted)
	}
}

// TestCutOffRun: a stream that ends inside a package (the runner was
// killed) fails that package instead of counting what it saw.
func TestCutOffRun(t *testing.T) {
	stream, err := os.ReadFile("testdata/gotest.json")
	require.NoError(t, err)
	end := bytes.Index(stream, []byte(`"Action":"pass","Package":"fixture/pass","Elapsed"`))
	require.Positive(t, end)
	cut := stream[:bytes.LastIndexByte(stream[:end], '\n')+1]
	c, out := tallyOf(t, cut)
	require.Contains(t, out, "FAIL fixture/pass (package: never finished; the run was cut off)")
	// Everything before the cut still counts and pass adds one failure;
	// skipall and timeout, after the cut, are gone (a skip, a pass and the
	// timeout's failure).
	require.Equal(t, counts{passed: fixtureCounts.passed - 1, failed: fixtureCounts.failed, skipped: fixtureCounts.skipped - 1}, c, out)
}

// TestLiveRun runs the fixture with this machine's go and checks that the
// toolchain still produces what the capture holds, so a change in go
// test's events cannot leave tally counting an old format.
func TestLiveRun(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to run the fixture with")
	}
	cmd := exec.Command(goBin, "test", "-trimpath", "-count=1", "-json", "-timeout", "2s", "./...")
	cmd.Dir = "testdata/fixture"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	stream, err := cmd.Output()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the fixture fails on purpose")
	c, out := tallyOf(t, stream)
	require.Equal(t, fixtureCounts, c, out)
}

// TestNotJSON: text go prints outside the event stream is passed on.
func TestNotJSON(t *testing.T) {
	c, out := tallyOf(t, []byte("pattern ./nothing/...: directory prefix nothing does not contain main module\n"))
	require.Equal(t, counts{}, c)
	require.Contains(t, out, "pattern ./nothing/...")
}
