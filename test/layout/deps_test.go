package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// forbiddenDeps maps a package tree of the module to outside modules that
// nothing in it may depend on, directly or not, tests included. cuse is a
// pure-Go FUSE and CUSE server: it speaks the protocol itself (its own
// wire structs, its own mount), so go-fuse has no place under it.
var forbiddenDeps = map[string][]string{
	"cuse/...": {"github.com/hanwen/go-fuse"},
}

// listedPackage is what `go list -json` says of a package.
type listedPackage struct {
	ImportPath string
	Imports    []string
}

func TestForbiddenDependencies(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			t.Skip("needs the go command to list dependencies")
		}
	}
	for tree, banned := range forbiddenDeps {
		pattern := "./" + strings.TrimSuffix(tree, "...") + "..."
		cmd := exec.Command(goTool, "list", "-deps", "-test", "-json", pattern)
		cmd.Dir = filepath.Join("..", "..")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pattern, err, stderr.String())
		}
		pkgs, err := decodePackages(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(pkgs) < 10 {
			t.Fatalf("go list %s listed only %d packages", pattern, len(pkgs))
		}
		for _, v := range dependsOn(pkgs, banned) {
			t.Errorf("%s: %s; nothing in %s may depend on %s", tree, v, tree, strings.Join(banned, " or "))
		}
	}
}

// TestForbiddenDependenciesAreFound checks the checker on a made-up list.
func TestForbiddenDependenciesAreFound(t *testing.T) {
	pkgs := []listedPackage{
		{ImportPath: "tbstream/cuse", Imports: []string{"context", "golang.org/x/sys/unix"}},
		{ImportPath: "tbstream/cuse/fakekernel", Imports: []string{"tbstream/cuse", "github.com/hanwen/go-fuse/v2/fuse"}},
		{ImportPath: "tbstream/cuse_test [tbstream/cuse.test]", Imports: []string{"github.com/hanwen/go-fuse/v2/fs"}},
		{ImportPath: "github.com/hanwen/go-fuse/v2/fuse", Imports: []string{"syscall"}},
		{ImportPath: "github.com/hanwen/go-fuse/v2/fs", Imports: []string{"github.com/hanwen/go-fuse/v2/fuse"}},
		{ImportPath: "github.com/hanwen/go-fuse-lookalike", Imports: nil},
		{ImportPath: "tbstream/cuse/fakekernel", Imports: []string{"tbstream/cuse", "github.com/hanwen/go-fuse/v2/fuse"}},
	}
	got := dependsOn(pkgs, []string{"github.com/hanwen/go-fuse"})
	want := []string{
		"tbstream/cuse/fakekernel imports github.com/hanwen/go-fuse/v2/fuse",
		"tbstream/cuse_test [tbstream/cuse.test] imports github.com/hanwen/go-fuse/v2/fs",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// decodePackages reads the stream of JSON objects `go list -json` writes.
func decodePackages(out []byte) ([]listedPackage, error) {
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return pkgs, nil
		}
		if err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
}

// dependsOn lists, sorted, every import of a banned module (a module path
// or a package below it) by a package outside the banned modules: with
// -deps the list holds every package the tree needs, so an indirect
// dependency shows as some package's import.
func dependsOn(pkgs []listedPackage, banned []string) []string {
	in := func(path string) bool {
		path, _, _ = strings.Cut(path, " ") // "p [q.test]": p recompiled for q's tests
		for _, b := range banned {
			if path == b || strings.HasPrefix(path, b+"/") {
				return true
			}
		}
		return false
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range pkgs {
		if in(p.ImportPath) {
			continue
		}
		for _, imp := range p.Imports {
			if v := p.ImportPath + " imports " + imp; in(imp) && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	sort.Strings(out)
	return out
}
