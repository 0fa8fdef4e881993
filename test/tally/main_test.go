package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTallyCounts(t *testing.T) {
	stream := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"run","Package":"p","Test":"TestB/sub"}
{"Action":"pass","Package":"p","Test":"TestB/sub"}
{"Action":"pass","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:9: needs /dev/fuse\n"}
{"Action":"output","Package":"p","Test":"TestC","Output":"--- SKIP: TestC (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestC"}
{"Action":"output","Package":"p","Test":"TestD","Output":"    boom\n"}
{"Action":"fail","Package":"p","Test":"TestD"}
{"Action":"fail","Package":"p"}
{"Action":"pass","Package":"q"}
`
	var out strings.Builder
	c, err := run(strings.NewReader(stream), &out)
	require.NoError(t, err)
	require.Equal(t, counts{passed: 3, failed: 1, skipped: 1}, c)
	require.Contains(t, out.String(), "SKIP p TestC: c_test.go:9: needs /dev/fuse")
	require.Contains(t, out.String(), "FAIL p TestD\n    boom\n")
	require.Contains(t, out.String(), "ok   q\n")
}

func TestTallyPackageFailureWithoutTests(t *testing.T) {
	stream := `{"ImportPath":"r","Action":"build-output","Output":"r/x.go:3: undefined: y\n"}
{"ImportPath":"r","Action":"build-fail"}
{"Action":"output","Package":"s","Output":"panic: in TestMain\n"}
{"Action":"fail","Package":"s"}
`
	var out strings.Builder
	c, err := run(strings.NewReader(stream), &out)
	require.NoError(t, err)
	require.Equal(t, counts{failed: 2}, c)
	require.Contains(t, out.String(), "undefined: y")
	require.Contains(t, out.String(), "panic: in TestMain")
}
