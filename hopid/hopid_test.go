package hopid

import (
	"sort"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAutoTakesLowestFreeFromEight(t *testing.T) {
	s := NewSpace("in", 19)
	for want := Min; want <= 19; want++ {
		h, err := s.Alloc(Auto)
		require.NoError(t, err)
		require.Equal(t, want, h)
	}
	_, err := s.Alloc(Auto)
	require.ErrorIs(t, err, syscall.ENOSPC)

	s.Free(12)
	h, err := s.Alloc(Auto)
	require.NoError(t, err)
	require.Equal(t, 12, h, "a freed HopID is reused first")
}

func TestAnyNegativeRequestIsAutomatic(t *testing.T) {
	s := NewSpace("in", 19)
	h, err := s.Alloc(-7)
	require.NoError(t, err)
	require.Equal(t, 8, h)
}

func TestExactRequest(t *testing.T) {
	s := NewSpace("out", 15)
	for _, tc := range []struct {
		req  int
		want int
		err  error
	}{
		{req: 9, want: 9},
		{req: 9, err: syscall.EBUSY},
		{req: 8, want: 8},
		{req: 15, want: 15},
		{req: 15, err: syscall.EBUSY},
		{req: 16, err: syscall.EINVAL},
		{req: 7, err: syscall.EINVAL},
		{req: 1, err: syscall.EINVAL},
		{req: 0, err: syscall.EINVAL},
	} {
		h, err := s.Alloc(tc.req)
		if tc.err != nil {
			require.ErrorIs(t, err, tc.err, "request %d", tc.req)
			continue
		}
		require.NoError(t, err, "request %d", tc.req)
		require.Equal(t, tc.want, h)
	}
	require.Equal(t, 3, s.Len())
}

func TestAutoSkipsExactlyTaken(t *testing.T) {
	s := NewSpace("in", 19)
	_, err := s.Alloc(8)
	require.NoError(t, err)
	h, err := s.Alloc(Auto)
	require.NoError(t, err)
	require.Equal(t, 9, h)
}

func TestSpacesAreSeparateAndOutDefaultsToFifteen(t *testing.T) {
	a := New(19, 0)
	require.Equal(t, 19, a.In.Max())
	require.Equal(t, DefaultRemoteMax, a.Out.Max())

	in, err := a.In.Alloc(8)
	require.NoError(t, err)
	out, err := a.Out.Alloc(8)
	require.NoError(t, err, "the out space does not see the in space's 8")
	require.Equal(t, in, out)

	_, err = a.Out.Alloc(16)
	require.ErrorIs(t, err, syscall.EINVAL, "16 is above the default out maximum")
	_, err = a.In.Alloc(16)
	require.NoError(t, err)

	require.Equal(t, 31, New(19, 31).Out.Max(), "an announced maxhopid is used")
}

func TestSetMax(t *testing.T) {
	s := NewSpace("out", 15)
	_, err := s.Alloc(20)
	require.ErrorIs(t, err, syscall.EINVAL)
	s.SetMax(31)
	h, err := s.Alloc(20)
	require.NoError(t, err)
	require.Equal(t, 20, h)
	s.SetMax(15)
	require.True(t, s.InUse(20), "lowering the maximum keeps what is allocated")
	_, err = s.Alloc(20)
	require.ErrorIs(t, err, syscall.EINVAL)
}

func TestFreeUnallocatedIsHarmless(t *testing.T) {
	s := NewSpace("in", 19)
	s.Free(0)
	s.Free(-1)
	s.Free(10)
	require.Equal(t, 0, s.Len())
}

func TestUpdate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		taken   []int // allocated by someone else first
		current int   // held by the stream before the write
		req     int
		want    int
		err     error
		inUse   []int // allocated afterwards (sorted)
	}{
		{name: "auto from nothing", req: Auto, want: 8, inUse: []int{8}},
		{name: "exact from nothing", req: 12, want: 12, inUse: []int{12}},
		{name: "release", current: 9, req: Release, want: 0},
		{name: "release nothing", req: Release, want: 0},
		{name: "move", current: 9, req: 12, want: 12, inUse: []int{12}},
		{name: "auto re-takes own", current: 8, req: Auto, want: 8, inUse: []int{8}},
		{name: "same value again is busy", current: 9, req: 9, want: 9, err: syscall.EBUSY, inUse: []int{9}},
		{name: "taken by another", taken: []int{10}, current: 9, req: 10, want: 9, err: syscall.EBUSY, inUse: []int{9, 10}},
		{name: "out of range keeps current", current: 9, req: 20, want: 9, err: syscall.EINVAL, inUse: []int{9}},
		{name: "below eight keeps current", current: 9, req: 3, want: 9, err: syscall.EINVAL, inUse: []int{9}},
		{name: "exhausted", taken: []int{8, 10, 11, 12, 13, 14, 15}, current: 9, req: Auto, want: 9, inUse: []int{8, 9, 10, 11, 12, 13, 14, 15}},
		{name: "exhausted without current", taken: []int{8, 9, 10, 11, 12, 13, 14, 15}, req: Auto, want: 0, err: syscall.ENOSPC, inUse: []int{8, 9, 10, 11, 12, 13, 14, 15}},
		{name: "unallocated current is not resurrected", current: 9, req: 20, want: 9, err: syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSpace("out", 15)
			for _, h := range tc.taken {
				_, err := s.Alloc(h)
				require.NoError(t, err)
			}
			if tc.current > 0 && tc.name != "unallocated current is not resurrected" {
				_, err := s.Alloc(tc.current)
				require.NoError(t, err)
			}
			got, err := s.Update(tc.current, tc.req)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.want, got)
			var inUse []int
			for h := Min; h <= 31; h++ {
				if s.InUse(h) {
					inUse = append(inUse, h)
				}
			}
			require.Equal(t, tc.inUse, inUse)
		})
	}
}

func TestConcurrentAllocationNeverDuplicates(t *testing.T) {
	const max = 200
	s := NewSpace("in", max)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		got     []int
		nospace int
	)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				req := Auto
				if i%4 == 0 {
					req = Min + (g*20+i)%(max-Min+1) // exact requests race with auto ones
				}
				h, err := s.Alloc(req)
				mu.Lock()
				switch {
				case err == nil:
					got = append(got, h)
				case req == Auto:
					require.ErrorIs(t, err, syscall.ENOSPC)
					nospace++
				default:
					require.ErrorIs(t, err, syscall.EBUSY)
				}
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	sort.Ints(got)
	for i := 1; i < len(got); i++ {
		require.NotEqual(t, got[i-1], got[i], "HopID %d handed out twice", got[i])
	}
	require.Len(t, got, max-Min+1, "320 requests for 193 HopIDs fill the space")
	require.Equal(t, max-Min+1, s.Len())
	require.Positive(t, nospace)
}

func TestConcurrentUpdateAndFree(t *testing.T) {
	s := NewSpace("out", 15)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur := 0
			for i := 0; i < 500; i++ {
				next, err := s.Update(cur, Auto)
				if err == nil {
					cur = next
				}
				if i%3 == 0 {
					cur, _ = s.Update(cur, Release)
				}
			}
			s.Free(cur)
		}()
	}
	wg.Wait()
	require.Equal(t, 0, s.Len(), "every goroutine released what it held")
}
