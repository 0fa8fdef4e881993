package configfs

import (
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseGroupName(t *testing.T) {
	tests := []struct {
		name string
		want GroupName // zero Name: EINVAL
	}{
		{"0-1.0", GroupName{Name: "0-1.0", Domain: 0, Route: 1, Service: 0}},
		{"0-503.0", GroupName{Name: "0-503.0", Route: 0x503}},
		{"1-2.1", GroupName{Name: "1-2.1", Domain: 1, Route: 2, Service: 1}},
		{"4294967295-ffffffffffffffff.4294967295", GroupName{Name: "4294967295-ffffffffffffffff.4294967295", Domain: 1<<32 - 1, Route: 1<<64 - 1, Service: 1<<32 - 1}},
		{"0-A0b.00", GroupName{Name: "0-A0b.00", Route: 0xa0b}},
		{"4294967296-1.0", GroupName{}},
		{"0-10000000000000000.0", GroupName{}},
		{"0-1.4294967296", GroupName{}},
		{"0-1", GroupName{}},
		{"0-1.", GroupName{}},
		{"-1.0", GroupName{}},
		{"0-.0", GroupName{}},
		{"0-1.0.0", GroupName{}},
		{"0-1-1.0", GroupName{}},
		{"+0-1.0", GroupName{}},
		{"0-0x1.0", GroupName{}},
		{"0-1.0 ", GroupName{}},
		{"0-1_0.0", GroupName{}},
		{"0-g.0", GroupName{}},
		{"backup", GroupName{}},
		{"", GroupName{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseGroupName(tc.name)
			if tc.want.Name == "" {
				require.ErrorIs(t, err, syscall.EINVAL)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.name, got.String())
		})
	}
}

// FuzzGroupName checks the parser against the reference's regular expression and the
// numbers' C types.
func FuzzGroupName(f *testing.F) {
	for _, seed := range []string{"0-1.0", "0-503.0", "1-2.1", "0-1", "+0-1.0", "4294967296-1.0", "0-A.00"} {
		f.Add(seed)
	}
	pattern := regexp.MustCompile(`^(\d+)-([0-9a-fA-F]+)\.(\d+)$`)
	f.Fuzz(func(t *testing.T, name string) {
		got, err := parseGroupName(name)
		parts := pattern.FindStringSubmatch(name)
		if parts == nil {
			require.Error(t, err)
			return
		}
		d, err1 := strconv.ParseUint(parts[1], 10, 32)
		r, err2 := strconv.ParseUint(parts[2], 16, 64)
		s, err3 := strconv.ParseUint(parts[3], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, GroupName{Name: name, Domain: uint32(d), Route: r, Service: uint32(s)}, got)
		require.False(t, strings.ContainsAny(name, "+_ "))
	})
}
