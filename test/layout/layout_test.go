package layout

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "tbstream"

// rules maps a package (or, with a trailing "/...", a package tree) to the module
// packages it may import. The most specific entry wins. Every package in the module must
// match an entry, so that a new package gets a rule when it is added.
//
// What the rules say: cuse and configfs import no Thunderbolt package; nhi knows nothing
// of XDomain: the core below it holds the control-packet codec (nhi/ctl, as Linux keeps
// ctl.c beside nhi.c) and the router's registers; hopid and the codecs import nothing;
// only commands and tests see everything.
var rules = map[string][]string{
	"hopid":                nil,
	"configfs":             nil,
	"cuse/...":             {"cuse/..."},
	"nhi/ctl":              nil,
	"xdomain/xdp":          {"nhi/ctl"},
	"xdomain/property":     {"xdomain/xdp"},
	"xdomain":              {"hopid", "nhi", "nhi/ctl", "xdomain/..."},
	"nhi/...":              {"nhi/..."},
	"nhi/emu/usbcable/...": {"nhi/emu/usbcable"}, // a byte transport: knows no cable framing
	"cmd/internal/sysfs":   nil,                  // the sysfs view reads the host through its own Source
	"cmd/...":              {"..."},
	"test/...":             {"..."},
}

func TestImportsFollowTheLayout(t *testing.T) {
	graph, err := moduleImports("../..")
	if err != nil {
		t.Fatal(err)
	}
	if len(graph) < 10 {
		t.Fatalf("found only %d packages; is the walk rooted at the module?", len(graph))
	}
	for _, v := range violations(graph, rules) {
		t.Error(v)
	}
}

// TestViolationsAreFound checks the checker on a made-up graph.
func TestViolationsAreFound(t *testing.T) {
	graph := map[string][]string{
		"configfs": {"xdomain"},

		"nhi":                {"nhi/ctl", "xdomain/xdp"},
		"nhi/emu":            {"nhi", "xdomain"},
		"cmd/tbstream":       {"nhi", "cuse"},
		"cmd/internal/sysfs": {"xdomain"},
		"newpkg":             nil,
	}
	got := violations(graph, rules)
	want := []string{
		"cmd/internal/sysfs imports xdomain",
		"configfs imports xdomain",

		"newpkg has no rule in layout_test.go",
		"nhi imports xdomain/xdp",
		"nhi/emu imports xdomain",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// violations lists, sorted, every import the rules do not allow and every package
// without a rule.
func violations(graph map[string][]string, rules map[string][]string) []string {
	var out []string
	for pkg, imports := range graph {
		allowed, ok := ruleFor(pkg, rules)
		if !ok {
			out = append(out, pkg+" has no rule in layout_test.go")
			continue
		}
		for _, imp := range imports {
			if !matchesAny(imp, allowed) {
				out = append(out, pkg+" imports "+imp)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ruleKey returns the most specific key of rules that covers pkg, or "".
func ruleKey(pkg string, rules map[string][]string) string {
	best := ""
	for key := range rules {
		if matches(pkg, key) && len(key) > len(best) {
			best = key
		}
	}
	return best
}

func ruleFor(pkg string, rules map[string][]string) ([]string, bool) {
	key := ruleKey(pkg, rules)
	if key == "" {
		return nil, false
	}
	return rules[key], true
}

func matchesAny(pkg string, patterns []string) bool {
	for _, p := range patterns {
		if matches(pkg, p) {
			return true
		}
	}
	return false
}

// matches reports whether pkg is pattern, or lies in the tree pattern names with a
// trailing "/..." ("..." alone matches every package).
func matches(pkg, pattern string) bool {
	if pattern == "..." {
		return true
	}
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return pkg == pattern
}

// moduleImports parses the non-test Go files under root (whatever their build tags) and
// returns, per package directory relative to root, the module packages it imports, with
// the module prefix removed.
func moduleImports(root string) (map[string][]string, error) {
	graph := make(map[string][]string)
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		if _, ok := graph[pkg]; !ok {
			graph[pkg] = nil
		}
		for _, spec := range f.Imports {
			imp, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if dep, ok := strings.CutPrefix(imp, module+"/"); ok {
				graph[pkg] = append(graph[pkg], dep)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return nil, err
	}
	return graph, nil
}
