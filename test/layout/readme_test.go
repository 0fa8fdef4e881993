package layout

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README is a user's page: short, and free of development history,
// which belongs in git and in closing notes.
func TestReadmeIsAUsersPage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if n := strings.Count(text, "\n"); n > 250 {
		t.Errorf("README.md has %d lines; a user's page keeps to 250 (the manuals are the package docs, tbstream help and test/README.md)", n)
	}
	history := regexp.MustCompile(`(?i)this session|\bA/B\b|\bissue \d+|\bgoal\b[^.]*\bmet\b`)
	for i, line := range strings.Split(text, "\n") {
		if m := history.FindString(line); m != "" {
			t.Errorf("README.md:%d: %q is development history, not for users: %s", i+1, m, line)
		}
	}
}
