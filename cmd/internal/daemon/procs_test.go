package daemon

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// RaiseProcs lifts GOMAXPROCS to MinProcs, never lowers it, and leaves it
// alone when the environment sets it.
func TestRaiseProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	t.Setenv("GOMAXPROCS", "")

	runtime.GOMAXPROCS(2)
	require.True(t, RaiseProcs())
	require.Equal(t, MinProcs, runtime.GOMAXPROCS(0))
	require.False(t, RaiseProcs(), "already at MinProcs")

	runtime.GOMAXPROCS(MinProcs + 4)
	require.False(t, RaiseProcs())
	require.Equal(t, MinProcs+4, runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "2")
	runtime.GOMAXPROCS(2)
	require.False(t, RaiseProcs(), "the environment decides")
	require.Equal(t, 2, runtime.GOMAXPROCS(0))
}
