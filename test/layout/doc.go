// Package layout holds the test that enforces DESIGN's import rules: which of the
// module's packages may import which. It has no code of its own.
package layout
