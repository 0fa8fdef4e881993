// Package layout holds the tests of the tree's shape: DESIGN's import rules
// (which of the module's packages may import which) and the README's limits
// as a user's page. It has no code of its own.
package layout
