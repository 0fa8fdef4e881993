package property

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"tbstream/nhi/ctl"
	"tbstream/xdomain/xdp"
)

var (
	streamUUID = xdp.MustParseUUID("3a1cb984-c4d9-4469-a277-ce2fdfd11f0d")
	backupUUID = xdp.MustParseUUID("01234567-89ab-cdef-0011-223344556677")
)

// workedExample is the 73-dword block of the kernel reference §4.5: a Linux
// host "host2" with only thunderbolt_stream loaded, local max HopID 19, one
// stream "backup" announced with in=8, out=9. Written out by hand from the
// table, not by this package.
var workedExample = []uint32{
	0x55584401, 28, // root magic, 7 entries
	0x76656e64, 0x6f726964, 0x76000001, 0x8086, // vendorid v
	0x76656e64, 0x6f726964, 0x74000003, 30, // vendorid t
	0x64657669, 0x63656964, 0x76000001, 0x1, // deviceid v
	0x64657669, 0x63657276, 0x76000001, 0x80000100, // devicerv v
	0x73747265, 0x616d0000, 0x44000018, 36, // stream D
	0x64657669, 0x63656964, 0x74000002, 33, // deviceid t
	0x6d617868, 0x6f706964, 0x76000001, 19, // maxhopid v
	0x496e7465, 0x6c20436f, 0x72702e00, // "Intel Corp."
	0x686f7374, 0x32000000, // "host2"
	0,                                              // padding for the stream directory
	0x84b91c3a, 0x6944d9c4, 0x2fce77a2, 0x0d1fd1df, // stream UUID
	0x70727463, 0x69640000, 0x76000001, 1, // prtcid
	0x70727463, 0x76657273, 0x76000001, 1, // prtcvers
	0x70727463, 0x72657673, 0x76000001, 0, // prtcrevs
	0x70727463, 0x73746e73, 0x76000001, 0, // prtcstns
	0x6261636b, 0x75700000, 0x4400000c, 61, // backup D
	0,                                              // padding for the backup directory
	0x67452301, 0xefcdab89, 0x33221100, 0x77665544, // backup UUID
	0x696e686f, 0x70696400, 0x76000001, 8, // inhopid
	0x6f757468, 0x6f706964, 0x76000001, 9, // outhopid
}

// buildLikeLinux builds the worked example the way Linux does: the global
// root, then per XDomain a copy with the service's local properties merged
// into its directory and deviceid(t), maxhopid appended.
func buildLikeLinux(t *testing.T) *Dir {
	stream := NewDir(&streamUUID)
	require.NoError(t, stream.AddValue("prtcid", 1))
	require.NoError(t, stream.AddValue("prtcvers", 1))
	require.NoError(t, stream.AddValue("prtcrevs", 0))
	require.NoError(t, stream.AddValue("prtcstns", 0))

	global := NewDir(nil)
	require.NoError(t, global.AddValue("vendorid", 0x8086))
	require.NoError(t, global.AddText("vendorid", "Intel Corp."))
	require.NoError(t, global.AddValue("deviceid", 0x1))
	require.NoError(t, global.AddValue("devicerv", 0x80000100))
	require.NoError(t, global.AddDir("stream", stream))

	local := stream.Copy()
	backup := NewDir(&backupUUID)
	require.NoError(t, backup.AddValue("inhopid", 8))
	require.NoError(t, backup.AddValue("outhopid", 9))
	require.NoError(t, local.AddDir("backup", backup))

	root := global.Copy()
	require.NoError(t, root.FindDir("stream").Merge(local, false))
	require.NoError(t, root.AddText("deviceid", "host2"))
	require.NoError(t, root.AddValue("maxhopid", 19))
	require.Len(t, global.FindDir("stream").Properties, 4, "the global directory is untouched")
	return root
}

func TestWorkedExampleFormatsExactly(t *testing.T) {
	block, err := buildLikeLinux(t).Format()
	require.NoError(t, err)
	require.Len(t, block, 73)
	require.Equal(t, workedExample, block)
}

func TestWorkedExampleParsesBack(t *testing.T) {
	root, err := Parse(workedExample)
	require.NoError(t, err)
	require.Equal(t, buildLikeLinux(t), root)

	require.Equal(t, uint32(0x8086), root.Find("vendorid", Value).Value)
	require.Equal(t, "Intel Corp.", root.Find("vendorid", Text).Text)
	require.Equal(t, "host2", root.Find("deviceid", Text).Text)
	require.Equal(t, uint32(1), root.Find("deviceid", Value).Value)
	require.Nil(t, root.Find("maxhopid", Text), "lookup matches the type too")
	stream := root.FindDir("stream")
	require.Equal(t, streamUUID, *stream.UUID)
	backup := stream.FindDir("backup")
	require.Equal(t, uint32(8), backup.Find("inhopid", Value).Value)
	require.Equal(t, uint32(9), backup.Find("outhopid", Value).Value)

	again, err := root.Format()
	require.NoError(t, err)
	require.Equal(t, workedExample, again)
}

func TestWireByteOrder(t *testing.T) {
	// Through the control channel every dword goes big-endian: keys and
	// text read naturally, directory UUIDs have each group reversed.
	frame, err := ctl.AppendFrame(nil, workedExample[:45])
	require.NoError(t, err)
	require.Equal(t, "vendorid", string(frame[8:16]))
	require.Equal(t, "Intel Corp.\x00", string(frame[30*4:33*4]))
	require.Equal(t, []byte{0x84, 0xb9, 0x1c, 0x3a, 0x69, 0x44, 0xd9, 0xc4}, frame[36*4:38*4])
	require.Equal(t, []byte{0x76, 0, 0, 1, 0, 0, 0x80, 0x86}, frame[4*4:6*4], "type 'v', length 1, value 0x8086")
}

func TestPaddingPerSubdirectory(t *testing.T) {
	a, b := xdp.MustParseUUID("00000000-0000-0000-0000-00000000000a"), xdp.MustParseUUID("00000000-0000-0000-0000-00000000000b")
	root := NewDir(nil)
	da, db := NewDir(&a), NewDir(&b)
	require.NoError(t, da.AddText("name", "abc"))
	require.NoError(t, root.AddDir("a", da))
	require.NoError(t, root.AddData("blob", []byte{1, 2, 3, 4, 5}))
	require.NoError(t, root.AddDir("b", db))
	block, err := root.Format()
	require.NoError(t, err)
	// root: 2 + 3×4 entries = 14, blob 2 dwords at 14..15, padding 16..17,
	// a at 18 (4 + 4 + "abc" 1 = 9 dwords), b at 27 (4).
	require.Len(t, block, 31)
	require.Equal(t, uint32(18), block[2+3], "a's offset")
	require.Equal(t, uint32(14), block[2+4+3], "blob's offset")
	require.Equal(t, uint32(27), block[2+8+3], "b's offset")
	require.Equal(t, []uint32{0, 0}, block[16:18])
	require.Equal(t, uint32(0x44000008), block[2+2], "a's length counts its UUID and entries only")
	back, err := Parse(block)
	require.NoError(t, err)
	require.Equal(t, []byte{1, 2, 3, 4, 5, 0, 0, 0}, back.Find("blob", Data).Data)
	require.Equal(t, "abc", back.FindDir("a").Find("name", Text).Text)
}

func TestParseRejects(t *testing.T) {
	mod := func(f func(b []uint32) []uint32) []uint32 {
		return f(append([]uint32(nil), workedExample...))
	}
	for _, tc := range []struct {
		name  string
		block []uint32
		want  error
	}{
		{"empty", nil, ErrMalformed},
		{"bad magic", mod(func(b []uint32) []uint32 { b[0]++; return b }), ErrMalformed},
		{"root longer than block", mod(func(b []uint32) []uint32 { b[1] = 74; return b }), ErrMalformed},
		{"entries past the end", mod(func(b []uint32) []uint32 { return b[:20] }), ErrMalformed},
		{"text outside", mod(func(b []uint32) []uint32 { b[9] = 72; return b }), ErrMalformed},
		{"text too long", mod(func(b []uint32) []uint32 { b[8] = 0x74000000 | 74; return b }), ErrMalformed},
		{"immediate of length 2", mod(func(b []uint32) []uint32 { b[4] = 0x76000002; return b }), ErrMalformed},
		{"directory outside", mod(func(b []uint32) []uint32 { b[21] = 70; return b }), ErrMalformed},
		{"directory shorter than a UUID", mod(func(b []uint32) []uint32 { b[20] = 0x44000003; return b }), ErrMalformed},
		{"directory loop", mod(func(b []uint32) []uint32 { b[59] = 36; b[58] = 0x44000018; return b }), ErrMalformed},
		{"empty key", mod(func(b []uint32) []uint32 { b[2], b[3] = 0, 0; return b }), ErrKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.block)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestParseKeepsUnknownTypesAndTerminatesText(t *testing.T) {
	block := []uint32{
		RootMagic, 8,
		0x6b657931, 0, 0x78000005, 0x1234, // "key1" of type 'x'
		0x74787400, 0, 0x74000001, 10, // "txt" text at 10
		0x61626364, // "abcd": no NUL, force-terminated to "abc"
	}
	root, err := Parse(block)
	require.NoError(t, err)
	u := root.Find("key1", Type('x'))
	require.NotNil(t, u)
	require.Equal(t, uint16(5), u.RawLength)
	require.Equal(t, uint32(0x1234), u.Value)
	require.Equal(t, "abc", root.Find("txt", Text).Text)
	require.Equal(t, "0x78", Type('x').String())
	require.Equal(t, "D", Directory.String())
}

func TestEightByteKey(t *testing.T) {
	root := NewDir(nil)
	require.NoError(t, root.AddValue("outhopid", 9))
	require.ErrorIs(t, root.AddValue("ninechars", 1), ErrKey)
	require.ErrorIs(t, root.AddValue("", 1), ErrKey)
	require.ErrorIs(t, root.AddValue("a\x00b", 1), ErrKey)
	block, err := root.Format()
	require.NoError(t, err)
	back, err := Parse(block)
	require.NoError(t, err)
	require.Equal(t, "outhopid", back.Properties[0].Key)
}

func TestDirectoryRules(t *testing.T) {
	root := NewDir(nil)
	require.ErrorIs(t, root.AddDir("nouuid", NewDir(nil)), ErrMalformed)
	require.NoError(t, root.AddDir("stream", NewDir(&streamUUID)))
	require.ErrorIs(t, root.AddDir("stream", NewDir(&streamUUID)), ErrKey, "a directory key appears once")
	require.NoError(t, root.AddValue("stream", 3), "other types may share the key")
	require.True(t, root.Remove("stream", Value))
	require.False(t, root.Remove("stream", Value))

	_, err := NewDir(&streamUUID).Format()
	require.ErrorIs(t, err, ErrMalformed, "only a root directory formats as a block")
	bad := NewDir(nil)
	bad.Properties = append(bad.Properties, &Property{Key: "t", Type: Text, Text: "a\x00b"})
	_, err = bad.Format()
	require.ErrorIs(t, err, ErrMalformed)
}

func TestMerge(t *testing.T) {
	dst := NewDir(&streamUUID)
	require.NoError(t, dst.AddValue("prtcid", 1))
	require.NoError(t, dst.AddValue("keep", 1))
	src := NewDir(&streamUUID)
	require.NoError(t, src.AddValue("keep", 2))
	require.NoError(t, src.AddText("keep", "text"))
	require.NoError(t, src.AddDir("backup", NewDir(&backupUUID)))

	kept := dst.Copy()
	require.NoError(t, kept.Merge(src, false))
	require.Equal(t, uint32(1), kept.Find("keep", Value).Value)
	require.Equal(t, "text", kept.Find("keep", Text).Text)
	require.NotNil(t, kept.FindDir("backup"))
	require.Len(t, kept.Properties, 4)

	replaced := dst.Copy()
	require.NoError(t, replaced.Merge(src, true))
	require.Equal(t, uint32(2), replaced.Find("keep", Value).Value)
	require.Equal(t, "keep", replaced.Properties[1].Key, "a replaced entry keeps its place")

	src.FindDir("backup").UUID[0] ^= 1
	require.NotEqual(t, src.FindDir("backup").UUID, kept.FindDir("backup").UUID, "merge copies")

	require.ErrorIs(t, dst.Merge(NewDir(&backupUUID), false), ErrUUID)
	require.ErrorIs(t, dst.Merge(NewDir(nil), false), ErrUUID)
}

func FuzzPropertyBlock(f *testing.F) {
	toBytes := func(words []uint32) []byte {
		b := make([]byte, 4*len(words))
		for i, w := range words {
			binary.BigEndian.PutUint32(b[4*i:], w)
		}
		return b
	}
	f.Add(toBytes(workedExample))
	f.Add(toBytes(workedExample[:36]))
	f.Add(toBytes([]uint32{RootMagic, 4, 0x61000000, 0, 0x44000004, 6, 1, 2, 3, 4}))
	f.Fuzz(func(t *testing.T, b []byte) {
		words := make([]uint32, len(b)/4)
		for i := range words {
			words[i] = binary.BigEndian.Uint32(b[4*i:])
		}
		root, err := Parse(words)
		if err != nil {
			return
		}
		block, err := root.Format()
		require.NoError(t, err, "an accepted block must format")
		back, err := Parse(block)
		require.NoError(t, err)
		require.Equal(t, root, back)
		again, err := back.Format()
		require.NoError(t, err)
		require.Equal(t, block, again, "formatting is deterministic")
	})
}
