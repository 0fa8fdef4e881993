package daemon

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu"
)

// TestFlagsCableKey: -cable-key loads the key into Options; a key file
// others may read, or a TCP listener beyond loopback without a key, stops
// the daemon before it starts, with one clear error.
func TestFlagsCableKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	require.NoError(t, os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	loose := filepath.Join(dir, "loose")
	require.NoError(t, os.WriteFile(loose, []byte("0123456789abcdef0123456789abcdef\n"), 0o600))
	require.NoError(t, os.Chmod(loose, 0o644))
	args := func(extra ...string) []string { return append([]string{"-run-dir", dir}, extra...) }

	o, err := ParseFlags("tbstreamd", args("-cable-key", key, "-listen", "tcp:0.0.0.0:7000"))
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef0123456789abcdef", string(o.CableKey))

	_, err = ParseFlags("tbstreamd", args("-cable-key", loose))
	require.ErrorContains(t, err, "-cable-key")
	require.ErrorContains(t, err, "mode 0644")

	for _, listen := range []string{"tcp:0.0.0.0:7000", "tcp:[::]:7000", "tcp:192.0.2.1:7000"} {
		_, err = ParseFlags("tbstreamd", args("-listen", listen))
		require.ErrorIs(t, err, emu.ErrNeedKey, listen)
		require.ErrorContains(t, err, "-cable-key", listen)

		_, err = Start(context.Background(), Options{RunDir: t.TempDir(), Listen: listen})
		require.ErrorIs(t, err, emu.ErrNeedKey, "Start refuses as the flags do: %s", listen)
	}
	for _, listen := range []string{"tcp:127.0.0.1:7000", "tcp::7000", "tcp:localhost:7000", "unix:cable.sock"} {
		o, err = ParseFlags("tbstreamd", args("-listen", listen))
		require.NoError(t, err, listen)
		require.Nil(t, o.CableKey)
	}
}

// The usage lists every flag once, with the name of its value, and its
// default only where that is not the zero value, as flag.PrintDefaults
// does.
func TestFlagDefaults(t *testing.T) {
	text := FlagDefaults()
	assert.NotContains(t, text, `(default "")`)
	assert.NotContains(t, text, "(default 0)")
	assert.NotContains(t, text, "(default false)")
	for _, want := range []string{
		"  -run-dir DIR\n", "  -adapter N\n", "  -cable-key FILE\n", "  -listen ADDR\n", "  -v\n", "  -version\n",
		"(default 1)\n", "(default 0600)\n", "(default auto)\n", "(default true)\n",
	} {
		assert.Contains(t, text, want)
	}
	var o Options
	var r rawFlags
	newFlagSet("", &o, &r).VisitAll(func(f *flag.Flag) {
		listed := regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `( |$)`)
		assert.Len(t, listed.FindAllString(text, -1), 1, "-%s listed once", f.Name)
	})
	for i, line := range strings.Split(text, "\n") {
		if strings.Contains(line, " ") && !strings.HasPrefix(line, "  -") {
			assert.LessOrEqual(t, len(line), flagWidth, "line %d: %s", i+1, line)
		}
	}
}

func TestParseFlagsHelpVersionUsage(t *testing.T) {
	for _, h := range []string{"-h", "-help", "--help"} {
		_, err := ParseFlags("tbstreamd", []string{h})
		assert.ErrorIs(t, err, flag.ErrHelp, h)
	}
	_, err := ParseFlags("tbstreamd", []string{"-version"})
	assert.ErrorIs(t, err, ErrVersion)
	_, err = ParseFlags("tbstreamd", nil)
	assert.EqualError(t, err, "-run-dir is required")
	_, err = ParseFlags("tbstreamd", []string{"-run-dir", t.TempDir(), "extra"})
	assert.EqualError(t, err, `unexpected argument "extra": the daemon takes flags only`)
	_, err = ParseFlags("tbstreamd", []string{"-frob"})
	assert.EqualError(t, err, "flag provided but not defined: -frob")
}

func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "tbstream", Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "-tags", Value: "usb"}, {Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "arm64"},
		{Key: "vcs.revision", Value: "44b298d0123456789abcdef0123456789abcdef0"},
		{Key: "vcs.time", Value: "2026-12-07T22:20:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	assert.Equal(t, "tbstreamd (devel) rev 44b298d (modified) 2026-12-07T22:20:00Z, go1.26.0 linux/arm64, tags: usb", formatVersion("tbstreamd", bi))
	bi.Settings = bi.Settings[:3]
	bi.Settings[0].Value = ""
	assert.Equal(t, "tbstream (devel) rev unknown, go1.26.0 linux/arm64, tags: none", formatVersion("tbstream", bi))
	assert.Equal(t, "tbstream (unknown) rev unknown, "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+", tags: none", formatVersion("tbstream", nil))
	assert.True(t, strings.HasPrefix(Version("x"), "x "))
}

// tbstreamd itself: -h prints the usage on standard output (no "flag: help
// requested", no empty defaults) and exits 0; -version exits 0; a flag it
// does not know exits 2 with one line and where the usage is.
func TestTbstreamdCommandLine(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build tbstreamd")
	}
	bin := filepath.Join(t.TempDir(), "tbstreamd")
	out, err := exec.Command(goCmd, "build", "-o", bin, "tbstream/cmd/tbstreamd").CombinedOutput()
	require.NoError(t, err, "%s", out)
	run := func(args ...string) (int, string, string) {
		var stdout, stderr strings.Builder
		c := exec.Command(bin, args...)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), stdout.String(), stderr.String()
		}
		require.NoError(t, err)
		return 0, stdout.String(), stderr.String()
	}
	for _, h := range []string{"-h", "--help"} {
		code, stdout, stderr := run(h)
		assert.Equal(t, 0, code, h)
		assert.True(t, strings.HasPrefix(stdout, "usage: tbstreamd -run-dir DIR [FLAGS]\n"), "%s: %s", h, stdout)
		assert.Equal(t, 1, strings.Count(stdout, "usage:"))
		assert.Contains(t, stdout, FlagDefaults())
		assert.NotContains(t, stdout, "help requested")
		assert.NotContains(t, stdout, `(default "")`)
		assert.Empty(t, stderr, h)
	}
	for _, v := range []string{"-version", "--version"} {
		code, stdout, stderr := run(v)
		assert.Equal(t, 0, code, v)
		assert.Regexp(t, `^tbstreamd \S+ rev .*, go1\.\S+ \S+/\S+, tags: \S+\n$`, stdout)
		assert.Empty(t, stderr)
	}
	code, stdout, stderr := run("-frob")
	assert.Equal(t, 2, code)
	assert.Empty(t, stdout)
	assert.Equal(t, "tbstreamd: flag provided but not defined: -frob\nrun 'tbstreamd -h' for usage\n", stderr)
	code, _, stderr = run()
	assert.Equal(t, 2, code)
	assert.Equal(t, "tbstreamd: -run-dir is required\nrun 'tbstreamd -h' for usage\n", stderr)
}
