package fusefile

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
)

// TestReadResultOneSliceNoCopy: a one-slice reply hands go-fuse the
// device's own memory; only several slices are copied into go-fuse's
// buffer.
func TestReadResultOneSliceNoCopy(t *testing.T) {
	slot := make([]byte, 8192)
	buf := make([]byte, 8192)
	out, st := (&readResult{res: cuse.ReadResult{Data: [][]byte{slot}}}).Bytes(buf)
	require.True(t, st.Ok())
	require.Equal(t, unsafe.SliceData(slot), unsafe.SliceData(out), "the slot itself")

	a, b := []byte("abc"), []byte("de")
	out, st = (&readResult{res: cuse.ReadResult{Data: [][]byte{a, b}}}).Bytes(buf)
	require.True(t, st.Ok())
	require.Equal(t, "abcde", string(out))
	require.Equal(t, unsafe.SliceData(buf), unsafe.SliceData(out), "gathered into go-fuse's buffer")
}
