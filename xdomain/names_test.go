package xdomain

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   ServiceID
	}{
		{"0-1.0", ServiceID{Host: HostID{Domain: 0, Route: 0x1}}},
		{"0-503.0", ServiceID{Host: HostID{Domain: 0, Route: 0x503}}},
		{"1-2.1", ServiceID{Host: HostID{Domain: 1, Route: 0x2}, Index: 1}},
		{"4294967295-ffffffffffffffff.4294967295", ServiceID{Host: HostID{Domain: 1<<32 - 1, Route: 1<<64 - 1}, Index: 1<<32 - 1}},
	} {
		id, err := ParseServiceID(tc.name)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.id, id)
		require.Equal(t, tc.name, id.String())
	}
	require.Equal(t, "0-503", HostID{Route: 0x503}.String())
	h, err := ParseHostID("0-503")
	require.NoError(t, err)
	require.Equal(t, HostID{Route: 0x503}, h)

	id, err := ParseServiceID("0-ABC.0")
	require.NoError(t, err, "upper-case hex parses")
	require.Equal(t, "0-abc.0", id.String(), "and prints as the kernel names it")
}

func TestBadNames(t *testing.T) {
	for _, bad := range []string{
		"", "stream", "0", "0-1", "0-1.", "-1.0", "0-.0", "0-1.0.0x", "0-1.0abc", "0-0x1.0",
		"+0-1.0", "0-1.+0", "0-1.-1", " 0-1.0", "0-1.0\n", "0-g.0", "4294967296-1.0",
		"0-10000000000000000.0", "0-1.4294967296", "0_1.0", "0-1,0",
	} {
		_, err := ParseServiceID(bad)
		require.ErrorIs(t, err, ErrName, "%q", bad)
	}
	for _, bad := range []string{"", "0", "0-", "x-1", "0-1-2"} {
		_, err := ParseHostID(bad)
		require.ErrorIs(t, err, ErrName, "%q", bad)
	}
}
