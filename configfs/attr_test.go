package configfs

import (
	"fmt"
	"log/slog"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAttributeValues writes values the way users do (echo adds a newline, printf does not)
// and reads them back, on a real mount.
func TestAttributeValues(t *testing.T) {
	type write struct {
		attr  Attr
		input string // printf format argument, shell-quoted by %q
		want  string // what cat prints afterwards, or "" when the write must fail
		err   string
	}
	writes := []write{
		{AttrInHopID, "-1\n", "-1\n", ""},
		{AttrInHopID, "8\n", "8\n", ""},
		{AttrInHopID, "8", "8\n", ""},
		{AttrInHopID, "0x8\n", "8\n", ""},
		{AttrInHopID, "0X1f", "31\n", ""},
		{AttrInHopID, "+8\n", "8\n", ""},
		{AttrInHopID, "010\n", "8\n", ""},
		{AttrInHopID, "0\n", "0\n", ""},
		{AttrInHopID, "-0x10\n", "-16\n", ""},
		{AttrInHopID, "2147483647\n", "2147483647\n", ""},
		{AttrInHopID, "-2147483648\n", "-2147483648\n", ""},
		{AttrOutHopID, "2147483648\n", "", erange},
		{AttrOutHopID, "99999999999999999999\n", "", erange},
		{AttrOutHopID, "8 \n", "", einval},
		{AttrOutHopID, "\n", "", einval},
		{AttrOutHopID, "08\n", "", einval},
		{AttrOutHopID, "0x\n", "", einval},
		{AttrOutHopID, "--1\n", "", einval},
		{AttrOutHopID, "+-1\n", "", einval},
		{AttrOutHopID, "1_0\n", "", einval},
		{AttrOutHopID, "0b1\n", "", einval},
		{AttrOutHopID, "0o7\n", "", einval},
		{AttrOutHopID, "eight\n", "", einval},
		{AttrRingSize, "32\n", "32\n", ""},
		{AttrRingSize, "4096\n", "4096\n", ""},
		{AttrRingSize, "0x100\n", "256\n", ""},
		{AttrRingSize, "31\n", "", einval},
		{AttrRingSize, "4097\n", "", einval},
		{AttrRingSize, "-1\n", "", einval},
		{AttrRingSize, "4294967296\n", "", erange},
		{AttrThrottling, "0\n", "0\n", ""},
		{AttrThrottling, "16776960\n", "16776960\n", ""},
		{AttrThrottling, "16776961\n", "", einval},
		{AttrBusyPoll, "1\n", "1\n", ""},
		{AttrBusyPoll, "Y\n", "1\n", ""},
		{AttrBusyPoll, "yes\n", "1\n", ""},
		{AttrBusyPoll, "on\n", "1\n", ""},
		{AttrBusyPoll, "true\n", "1\n", ""},
		{AttrBusyPoll, "0\n", "0\n", ""},
		{AttrBusyPoll, "n\n", "0\n", ""},
		{AttrBusyPoll, "OFF\n", "0\n", ""},
		{AttrBusyPoll, "F", "0\n", ""},
		{AttrBusyPoll, "2\n", "", einval},
		{AttrBusyPoll, "o\n", "", einval},
		{AttrBusyPoll, "-1\n", "", einval},
		{AttrIndex, "1\n", "", eacces},
	}
	m := mountForTest(t, nil)
	m.ok("mkdir -p 0-1.0/backup")
	for _, w := range writes {
		t.Run(fmt.Sprintf("%s=%q", w.attr, w.input), func(t *testing.T) {
			before := m.ok("cat 0-1.0/backup/" + w.attr.String())
			script := fmt.Sprintf("printf %%s %s > 0-1.0/backup/%s", shellQuote(w.input), w.attr)
			if w.err != "" {
				m.fails(script, w.err)
				require.Equal(t, before, m.ok("cat 0-1.0/backup/"+w.attr.String()), "a refused write changes nothing")
				return
			}
			m.ok(script)
			require.Equal(t, w.want, m.ok("cat 0-1.0/backup/"+w.attr.String()))
		})
	}
}

func shellQuote(s string) string { return "$'" + strconv.Quote(s)[1:len(strconv.Quote(s))-1] + "'" }

// TestStreamDriverErrors: what the backend refuses keeps its errno, and a fresh item shows
// the driver's defaults.
func TestStreamDriverErrors(t *testing.T) {
	runShellCases(t, []shellCase{
		{name: "defaults", setup: stream, script: "cd 0-1.0/backup && cat index in_hopid out_hopid ring_size throttling busy_poll",
			want: "0\n0\n0\n256\n8192\n0\n"},
		{name: "ls", setup: stream, script: "ls 0-1.0/backup", want: "busy_poll\nin_hopid\nindex\nout_hopid\nring_size\nthrottling\n"},
		{name: "grep every attribute", setup: stream + " && echo 0x10 > in_hopid", script: "cd 0-1.0/backup && grep . *",
			want: "busy_poll:0\nin_hopid:16\nindex:0\nout_hopid:0\nring_size:256\nthrottling:8192\n"},
		{name: "find", setup: stream, script: "find .. -name '[io]*' | sort", want: "../stream/0-1.0/backup/in_hopid\n../stream/0-1.0/backup/index\n../stream/0-1.0/backup/out_hopid\n"},
		{name: "ls -a", setup: stream, script: "ls -a 0-1.0", want: ".\n..\nbackup\n"},
		{name: "index is lowest free", setup: "mkdir 0-1.0 0-1.0/a 0-1.0/b 0-1.0/c && rmdir 0-1.0/a",
			script: "mkdir 0-1.0/d && cat 0-1.0/d/index 0-1.0/b/index 0-1.0/c/index", want: "0\n1\n2\n"},
		{name: "groups before any peer", script: "mkdir 0-1.0 1-503.0 0-3.1 && ls", want: "0-1.0\n0-3.1\n1-503.0\n"},
		{name: "write while open", setup: stream, fault: failOn(OpStore, syscall.EBUSY), script: "echo 256 > 0-1.0/backup/ring_size", err: ebusy},
		{name: "hopid taken", setup: stream, fault: failOn(OpStore, syscall.EBUSY), script: "echo 8 > 0-1.0/backup/in_hopid", err: ebusy},
		{name: "hopids exhausted", setup: stream, fault: failOn(OpStore, syscall.ENOSPC), script: "echo -1 > 0-1.0/backup/out_hopid", err: enospc},
		{name: "hopid out of range", setup: stream, fault: failOn(OpStore, syscall.EINVAL), script: "echo 99 > 0-1.0/backup/in_hopid", err: einval},
		{name: "show refused", setup: stream, fault: failOn(OpShow, syscall.ENODEV), script: "cat 0-1.0/backup/in_hopid", err: "No such device"},
		{name: "backend error without errno", setup: stream, fault: func(op Op) error {
			if op.Kind == OpStore {
				return fmt.Errorf("ring allocation: %w", errOpaque)
			}
			return nil
		}, script: "echo 64 > 0-1.0/backup/ring_size", err: "Input/output error", check: func(t *testing.T, m *mounted) {
			require.Contains(t, m.logs.String(), `msg="configfs backend failed" op="store backup/ring_size" err="ring allocation: opaque failure"`)
		}},
		{name: "backend errno wrapped", setup: stream, fault: func(op Op) error {
			if op.Kind == OpStore {
				return fmt.Errorf("attach: %w", syscall.ENOSPC)
			}
			return nil
		}, script: "echo -1 > 0-1.0/backup/in_hopid", err: enospc},
		{name: "rmdir -p", setup: stream, script: "rmdir -p 0-1.0/backup && ls -A", want: "", check: hasGroups(map[string][]string{})},
		{name: "rmdir -p with a sibling left", setup: stream + " && mkdir ../camera", script: "rmdir -p 0-1.0/backup", err: enotempty,
			check: hasGroups(map[string][]string{"0-1.0": {"camera"}})},
		{name: "rmdir of an attribute", setup: stream, script: "rmdir 0-1.0/backup/index", err: enotdir},
		{name: "chmod sticks", setup: stream, script: "chmod 600 0-1.0/backup/in_hopid && stat -c %a 0-1.0/backup/in_hopid", want: "600\n"},
		{name: "chown sticks", setup: stream, script: "chown 65534:65534 0-1.0/backup/ring_size && stat -c %u:%g 0-1.0/backup/ring_size", want: "65534:65534\n"},
		{name: "no write bit refuses even root", setup: stream + " && chmod 444 in_hopid", script: "echo 8 > 0-1.0/backup/in_hopid", err: eacces},
		{name: "index stays read-only after chmod", setup: stream + " && chmod 644 index", script: "echo 8 > 0-1.0/backup/index", err: eacces},
		{name: "truncate to a size", setup: stream + " && echo 9 > in_hopid", fault: failOn(OpStore, syscall.EIO),
			script: "truncate -s 100 0-1.0/backup/in_hopid && cat 0-1.0/backup/in_hopid && stat -c %s 0-1.0/backup/in_hopid", want: "9\n4096\n"},
		{name: "touch an attribute", setup: stream, fault: failOn(OpStore, syscall.EIO), script: "touch -d @1000000000 0-1.0/backup/in_hopid && stat -c %Y 0-1.0/backup/in_hopid", want: "1000000000\n"},
	})
}

var errOpaque = fmt.Errorf("opaque failure")

// TestParseAttr checks the parse table directly, including what a shell cannot send.
func TestParseAttr(t *testing.T) {
	tests := []struct {
		attr  Attr
		input string
		want  int64
		errno syscall.Errno
	}{
		{AttrInHopID, "8\n\n", 0, syscall.EINVAL}, // bash's printf would send this as two writes
		{AttrInHopID, "8\x00junk", 8, 0},          // the kernel's C string ends at the NUL
		{AttrInHopID, "\x008", 0, syscall.EINVAL},
		{AttrInHopID, "", 0, syscall.EINVAL},
		{AttrInHopID, "-", 0, syscall.EINVAL},
		{AttrInHopID, "+", 0, syscall.EINVAL},
		{AttrInHopID, "0", 0, 0},
		{AttrInHopID, "-0", 0, 0},
		{AttrInHopID, "0x", 0, syscall.EINVAL},
		{AttrInHopID, "0xg", 0, syscall.EINVAL},
		{AttrInHopID, "0x7fffffff", 0x7fffffff, 0},
		{AttrInHopID, "0x80000000", 0, syscall.ERANGE},
		{AttrInHopID, "-0x80000000", -0x80000000, 0},
		{AttrInHopID, "0xffffffffffffffffff junk", 0, syscall.ERANGE}, // overflow before junk
		{AttrInHopID, "-9223372036854775808", 0, syscall.ERANGE},
		{AttrRingSize, "+64", 64, 0},
		{AttrRingSize, "0100", 64, 0},
		{AttrThrottling, "0x", 0, syscall.EINVAL},
		{AttrBusyPoll, "", 0, syscall.EINVAL},
		{AttrBusyPoll, "1junk", 1, 0},
		{AttrBusyPoll, "oN", 1, 0},
		{AttrBusyPoll, "of", 0, 0},
		{AttrIndex, "1", 0, syscall.EACCES},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s=%q", tc.attr, tc.input), func(t *testing.T) {
			v, errno := tc.attr.parse([]byte(tc.input))
			require.Equal(t, tc.errno, errno)
			if errno == 0 {
				require.Equal(t, tc.want, v)
			}
		})
	}
}

func TestShow(t *testing.T) {
	require.Equal(t, "-1\n", string(AttrInHopID.show(-1)))
	require.Equal(t, "4096\n", string(AttrRingSize.show(4096)))
	require.Equal(t, "4294967295\n", string(AttrThrottling.show(-1)), "%u of a u32")
	require.Equal(t, "busy_poll", AttrBusyPoll.String())
	a, ok := attrNamed("out_hopid")
	require.True(t, ok)
	require.Equal(t, AttrOutHopID, a)
	_, ok = attrNamed("power")
	require.False(t, ok)
}

// FuzzStoreAttribute stores random bytes into every attribute through the same path a
// write(2) takes (store on a live item of a MemBackend): it must never panic, must
// refuse with EINVAL, ERANGE or EACCES only, and what it stores must print back as text
// that parses to the same value.
func FuzzStoreAttribute(f *testing.F) {
	for _, seed := range []string{"-1\n", "8", "0x8\n", "+8", "010", "08", "0x", "yes", "off", "4096\n", "16776960", "", "\x00", "99999999999999999999"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tr := newTree(NewMemBackend(), slog.New(slog.DiscardHandler))
		g, errno := tr.makeGroup(t.Context(), "0-1.0")
		require.Zero(t, errno)
		it, errno := tr.makeItem(t.Context(), g, "s")
		require.Zero(t, errno)
		for a := range numAttrs {
			before, errno := tr.show(t.Context(), it, a)
			require.Zero(t, errno)
			n, errno := tr.store(t.Context(), it, a, []byte(input))
			after, showErr := tr.show(t.Context(), it, a)
			require.Zero(t, showErr)
			if errno != 0 {
				require.Contains(t, []syscall.Errno{syscall.EINVAL, syscall.ERANGE, syscall.EACCES}, errno)
				require.Equal(t, before, after, "a refused store changes nothing")
				continue
			}
			require.Equal(t, min(len(input), attrPageSize-1), int(n))
			stored, _ := a.parse([]byte(input))
			again, errno := a.parse(after)
			require.Zero(t, errno, "%s shows %q, which does not parse", a, after)
			require.Equal(t, stored, again)
		}
	})
}
