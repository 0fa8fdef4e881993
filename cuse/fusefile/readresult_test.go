package fusefile

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"tbstream/cuse"
)

// TestReadResultSlicesNoCopy: a reply of several slices hands go-fuse the
// device's own memory, slice by slice; only more than MaxReplySlices
// (writev's limit) are gathered, once, into one buffer.
func TestReadResultSlicesNoCopy(t *testing.T) {
	slots := make([]byte, 3*4096)
	data := [][]byte{slots[:4096], slots[8192:8200], slots[4096:4100]}
	out, st := (&readResult{res: cuse.ReadResult{Data: data}}).Slices()
	require.True(t, st.Ok())
	require.Len(t, out, len(data))
	for i := range data {
		require.Equal(t, unsafe.SliceData(data[i]), unsafe.SliceData(out[i]), "slice %d is the device's memory", i)
		require.Len(t, out[i], len(data[i]))
	}

	var many [][]byte
	var want []byte
	for i := range MaxReplySlices + 1 {
		b := []byte{byte(i), byte(i >> 8)}
		many = append(many, b)
		want = append(want, b...)
	}
	r := &readResult{res: cuse.ReadResult{Data: many}}
	out, st = r.Slices()
	require.True(t, st.Ok())
	require.Len(t, out, 1, "gathered")
	require.True(t, bytes.Equal(want, out[0]))
	again, _ := r.Slices()
	require.Equal(t, unsafe.SliceData(out[0]), unsafe.SliceData(again[0]), "the same data each call, as go-fuse requires")
}
