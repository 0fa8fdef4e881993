package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"tbstream/nhi/emu"
)

func f64(v float64) *float64 { return &v }
func u64(v uint64) *uint64   { return &v }

// watchSamples are two samples 2 s apart: on host1 a stream that moved
// (s), one new in the interval (n) and one made anew (r, whose counters
// went back); host2 with a stream that stood still and dropped frames;
// host3 on real hardware (no fabric counters) without streams; host4 not
// running.
func watchSamples() (prev, cur watchSample) {
	t0 := time.Date(2026, 12, 7, 22, 20, 0, 0, time.UTC)
	stream := func(name string, index int, tx, txFrames, rx, rxFrames uint64) streamJSON {
		return streamJSON{Name: name, Index: index, Device: "tbstream" + string(rune('0'+index)), State: "open", Open: 1,
			TxBytes: tx, TxFrames: txFrames, RxBytes: rx, RxFrames: rxFrames}
	}
	group := func(name string, streams ...streamJSON) []groupJSON {
		return []groupJSON{{Name: name, Attached: true, Streams: streams}}
	}
	prev = watchSample{at: t0, hosts: []hostJSON{
		{Name: "host1", Groups: group("0-503.0", stream("s", 0, 1e6, 100, 0, 0), stream("r", 2, 9e6, 900, 0, 0)), Fabric: &emu.Counters{}},
		{Name: "host2", Groups: group("0-1.0", stream("s", 0, 0, 0, 1e6, 100)), Fabric: &emu.Counters{RxOverflow: 3}},
		{Name: "host3"},
		{Name: "host4", Error: "not running: start its tbstreamd"},
	}}
	cur = watchSample{at: t0.Add(2 * time.Second), hosts: []hostJSON{
		{Name: "host1", Groups: group("0-503.0", stream("s", 0, 5e6, 300, 0, 0), stream("n", 1, 4e6, 50, 0, 0), stream("r", 2, 1e6, 10, 0, 0)),
			Fabric: &emu.Counters{}},
		{Name: "host2", Groups: group("0-1.0", stream("s", 0, 0, 0, 1e6, 100)), Fabric: &emu.Counters{RxOverflow: 5, TxNoPath: 2}},
		{Name: "host3"},
		{Name: "host4", Error: "not running: start its tbstreamd"},
	}}
	cur.hosts[1].Groups[0].Streams[0].Undelivered = 7
	cur.hosts[1].Groups[0].Streams[0].RxDiscarded = 9
	return prev, cur
}

func TestRateInterval(t *testing.T) {
	prev, cur := watchSamples()
	iv := rateInterval(prev, cur)
	assert.Equal(t, cur.at, iv.Time)
	assert.Equal(t, 2.0, iv.Seconds)
	require.Len(t, iv.Hosts, 4)

	h1 := iv.Hosts[0]
	require.Len(t, h1.Streams, 3)
	s := h1.Streams[0]
	assert.Equal(t, "s", s.Stream)
	assert.Equal(t, f64(2), s.TxMBps, "4e6 bytes in 2 s")
	assert.Equal(t, f64(0), s.RxMBps)
	assert.Equal(t, f64(100), s.TxFramesPerS, "200 frames in 2 s")
	assert.Equal(t, f64(0), s.RxFramesPerS)
	assert.Equal(t, uint64(5e6), s.TxBytes)
	for _, fresh := range h1.Streams[1:] {
		assert.Nil(t, fresh.TxMBps, fresh.Stream)
		assert.Nil(t, fresh.RxMBps, fresh.Stream)
		assert.Nil(t, fresh.TxFramesPerS, fresh.Stream)
		assert.Nil(t, fresh.RxFramesPerS, fresh.Stream)
	}
	assert.Equal(t, watchCounters{Open: 3, TxBytes: 10e6, TxFrames: 360, TxMBps: f64(2), RxMBps: f64(0), TxFramesPerS: f64(100), RxFramesPerS: f64(0)},
		h1.Total, "counters of all streams, the rates known")
	assert.Equal(t, u64(0), h1.Drops)
	assert.Equal(t, f64(0), h1.DropsPerSecond)

	h2 := iv.Hosts[1]
	assert.Equal(t, f64(0), h2.Streams[0].RxMBps, "a stream that stood still")
	assert.Equal(t, uint64(7), h2.Total.Undelivered)
	assert.Equal(t, uint64(9), h2.Total.RxDiscarded)
	assert.Equal(t, u64(7), h2.Drops)
	assert.Equal(t, f64(2), h2.DropsPerSecond, "from 3 to 7 in 2 s")

	h3 := iv.Hosts[2]
	assert.Empty(t, h3.Streams)
	assert.Nil(t, h3.Drops, "real hardware")
	assert.Equal(t, f64(0), h3.Total.TxMBps, "nothing moves without streams")

	assert.Equal(t, "not running: start its tbstreamd", iv.Hosts[3].Error)
}

func TestRateIntervalEdges(t *testing.T) {
	assert.Nil(t, rate(5, 4, 1, 1), "a counter that went back")
	assert.Nil(t, rate(4, 5, 0, 1), "no time")
	assert.Equal(t, f64(0.5), rate(1e6, 2e6, 2, 1e6))
	prev, cur := watchSamples()
	assert.Empty(t, rateInterval(watchSample{at: prev.at}, watchSample{at: cur.at}).Hosts)
	iv := rateInterval(watchSample{at: prev.at}, cur)
	assert.Nil(t, iv.Hosts[0].Streams[0].TxMBps, "no earlier sample: no rate")
	assert.Nil(t, iv.Hosts[1].DropsPerSecond)
}

func TestWriteTable(t *testing.T) {
	prev, cur := watchSamples()
	var b bytes.Buffer
	require.NoError(t, writeTable(&b, rateInterval(prev, cur)))
	want := `HOST   GROUP    STREAM     DEVICE     STATE  OPEN  TX MB/s  RX MB/s  TX FRAMES/s  RX FRAMES/s  UNDELIVERED  RX DISCARDED  DROPS
host1  0-503.0  s          tbstream0  open   1     2.0      0.0      100          0            0            0             -
host1  0-503.0  n          tbstream1  open   1     -        -        -            -            0            0             -
host1  0-503.0  r          tbstream2  open   1     -        -        -            -            0            0             -
host1  total    3 streams                    3     2.0      0.0      100          0            0            0             0
host2  0-1.0    s          tbstream0  open   1     0.0      0.0      0            0            7            9             -
host2  total    1 stream                     1     0.0      0.0      0            0            7            9             7
host3  total    0 streams                    0     0.0      0.0      0            0            0            0             -
host4: not running: start its tbstreamd
`
	assert.Equal(t, want, b.String())
}

func TestWriteIntervalForms(t *testing.T) {
	prev, cur := watchSamples()
	iv := rateInterval(prev, cur)

	var b bytes.Buffer
	require.NoError(t, writeInterval(&b, iv, watchOptions{json: true}, true))
	require.NoError(t, writeInterval(&b, iv, watchOptions{json: true}, false))
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	require.Len(t, lines, 2, "JSON Lines: one object a line")
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &got))
	assert.Equal(t, "2026-12-07T22:20:02Z", got["time"])
	hosts := got["hosts"].([]any)
	require.Len(t, hosts, 4)
	s0 := hosts[0].(map[string]any)["streams"].([]any)[0].(map[string]any)
	assert.Equal(t, 2.0, s0["tx_mb_per_s"])
	assert.Equal(t, 5e6, s0["tx_bytes"])
	s1 := hosts[0].(map[string]any)["streams"].([]any)[1].(map[string]any)
	assert.Contains(t, s1, "tx_mb_per_s")
	assert.Nil(t, s1["tx_mb_per_s"], "unknown: null")
	assert.Nil(t, hosts[2].(map[string]any)["drops"])

	var table bytes.Buffer
	require.NoError(t, writeTable(&table, iv))
	b.Reset()
	require.NoError(t, writeInterval(&b, iv, watchOptions{interval: time.Second}, true))
	require.NoError(t, writeInterval(&b, iv, watchOptions{interval: time.Second}, false))
	each := "2026-12-07 22:20:02 UTC: rates over 2.00 s\n" + table.String()
	assert.Equal(t, each+"\n"+each, b.String(), "not a terminal: one table after the other, a blank line between")

	b.Reset()
	require.NoError(t, writeInterval(&b, iv, watchOptions{interval: time.Second, terminal: true}, false))
	assert.Equal(t, "\x1b[H\x1b[2J2026-12-07 22:20:02 UTC: rates over 2.00 s, every 1s; Ctrl-C stops\n\n"+table.String(), b.String())
}

// list -w on running hosts: a stream that moved a MiB shows it, in the
// counters and the rates, and -count ends the watch.
func TestWatchRunningHosts(t *testing.T) {
	needFUSEHosts(t)
	ctx := testContext(t)
	run := startHosts(ctx, t)
	setup, err := setupStreams(ctx, run, 1, itemAttrs{throttling: -1})
	var files []*os.File
	defer func() {
		require.NoError(t, setup.remove())
		for _, f := range files {
			f.Close()
		}
	}()
	require.NoError(t, err)
	es := setup.streams[0]
	server, err := openDevice(es.serverPath)
	require.NoError(t, err)
	files = append(files, server)
	client, err := openDevice(es.clientPath)
	require.NoError(t, err)
	files = append(files, client)

	hosts := []string{"host1", "host2"}
	before := takeSample(run, hosts, time.Now())
	const n = 1 << 20
	got := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(server, make([]byte, n))
		got <- err
	}()
	_, err = client.Write(bytes.Repeat([]byte{0xa5}, n))
	require.NoError(t, err)
	require.NoError(t, <-got)

	find := func(h watchHost) watchStream {
		for _, s := range h.Streams {
			if s.Stream == es.name {
				return s
			}
		}
		t.Fatalf("%s: no stream %s in %+v", h.Name, es.name, h.Streams)
		return watchStream{}
	}
	// A READ's bytes are counted once its reply is written, which may be
	// a moment after the reader has them.
	var iv watchInterval
	var c, s watchStream
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		iv = rateInterval(before, takeSample(run, hosts, time.Now()))
		require.Len(t, iv.Hosts, 2)
		c, s = find(iv.Hosts[0]), find(iv.Hosts[1])
		if s.RxBytes >= n || time.Now().After(deadline) {
			break
		}
	}
	assert.Equal(t, "host1", iv.Hosts[0].Name)
	assert.GreaterOrEqual(t, c.TxBytes, uint64(n))
	assert.GreaterOrEqual(t, s.RxBytes, uint64(n))
	assert.Equal(t, 1, c.Open)
	require.NotNil(t, c.TxMBps)
	require.NotNil(t, s.RxMBps)
	assert.Positive(t, *c.TxMBps)
	assert.Positive(t, *s.RxMBps)
	assert.Positive(t, *c.TxFramesPerS)
	assert.NotNil(t, iv.Hosts[0].Drops, "emulated hosts count their drops")

	var out bytes.Buffer
	require.NoError(t, watchList(ctx, &out, run, nil, watchOptions{interval: 10 * time.Millisecond, count: 2, json: true}))
	sc := bufio.NewScanner(&out)
	lines := 0
	for sc.Scan() {
		var line watchInterval
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		require.Len(t, line.Hosts, 2)
		assert.Equal(t, "host2", line.Hosts[1].Name)
		assert.Len(t, line.Hosts[1].Streams, 1)
		lines++
	}
	assert.Equal(t, 2, lines, "-count 2: two intervals")
}
