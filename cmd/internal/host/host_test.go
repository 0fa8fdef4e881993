package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/cmd/internal/stream"
	"tbstream/configfs"
	"tbstream/cuse"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
	"tbstream/xdomain"
)

// nodes is a stream.Devices that keeps the devices in a map; tests call
// them as the CUSE server would.
type nodes struct {
	mu  sync.Mutex
	dev map[string]cuse.Device
}

func (n *nodes) Register(name string, d cuse.Device) (stream.Node, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev[name] != nil {
		return nil, syscall.EEXIST
	}
	n.dev[name] = d
	return fakeNode{n, name}, nil
}

type fakeNode struct {
	n    *nodes
	name string
}

func (nd fakeNode) Unlink() {
	nd.n.mu.Lock()
	delete(nd.n.dev, nd.name)
	nd.n.mu.Unlock()
}
func (nd fakeNode) Close() {}

func (n *nodes) get(name string) cuse.Device {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dev[name]
}

type testHost struct {
	*Host
	emu   *emu.Host
	nodes *nodes
}

// testLogger shows warnings and errors, which go test prints only for a failing test.
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

var fast = xdomain.Timing{Timeout: 200 * time.Millisecond, Retries: 10, ShortTimeout: 5 * time.Millisecond, ChangedDelay: 5 * time.Millisecond}

func startHost(t *testing.T, name string) *testHost {
	e, err := emu.NewHost(emu.Config{Name: name, Logger: testLogger()})
	require.NoError(t, err)
	n := &nodes{dev: map[string]cuse.Device{}}
	h, err := Start(Config{Name: name, Device: e, Devices: n, Timing: fast, Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(func() {
		h.Close()
		e.Close()
	})
	return &testHost{Host: h, emu: e, nodes: n}
}

// twoHosts joins host1 and host2 as in the documentation — host2 sees host1
// as 0-1, host1 sees host2 as 0-503 — and waits until each has found the
// other's stream service.
func twoHosts(t *testing.T) (h1, h2 *testHost, unplug func()) {
	h1, h2 = startHost(t, "host1"), startHost(t, "host2")
	c1, _, err := emu.ConnectInProcess(h1.emu, emu.Port{Adapter: 3, PeerRoute: 0x503}, h2.emu, emu.Port{Adapter: 1, PeerRoute: 0x1})
	require.NoError(t, err)
	t.Cleanup(func() { c1.Close() })
	waitService(t, h2, 0x1)
	waitService(t, h1, 0x503)
	return h1, h2, func() { c1.Close() }
}

func waitService(t *testing.T, h *testHost, route ctl.Route) *xdomain.XDomain {
	t.Helper()
	var xd *xdomain.XDomain
	require.Eventually(t, func() bool {
		xd = h.XDomain.XDomain(route)
		return xd != nil && len(xd.Services()) > 0
	}, 10*time.Second, 5*time.Millisecond, "no stream service at %v", route)
	return xd
}

func mkItem(t *testing.T, h *testHost, group, name string) configfs.Item {
	t.Helper()
	gn := groupName(t, group)
	ctx := context.Background()
	g, err := h.Streams.MakeGroup(ctx, gn)
	require.NoError(t, err)
	it, err := g.MakeItem(ctx, name)
	require.NoError(t, err)
	return it
}

func groupName(t *testing.T, name string) configfs.GroupName {
	t.Helper()
	id, err := xdomain.ParseServiceID(name)
	require.NoError(t, err)
	return configfs.GroupName{Name: name, Domain: id.Host.Domain, Route: uint64(id.Host.Route), Service: id.Index}
}

func show(t *testing.T, it configfs.Item, a configfs.Attr) int64 {
	t.Helper()
	v, err := it.Show(context.Background(), a)
	require.NoError(t, err)
	return v
}

func open(t *testing.T, h *testHost, node string, flags uint32) cuse.Handle {
	t.Helper()
	d := h.nodes.get(node)
	require.NotNil(t, d, "node %s", node)
	hd, err := d.Open(context.Background(), &cuse.OpenRequest{Flags: flags, Wake: func() {}})
	require.NoError(t, err)
	return hd
}

// readAll reads hd until EOF (see readToEOF).
func readAll(t *testing.T, hd cuse.Handle) []byte {
	b, err := readToEOF(hd)
	require.NoError(t, err)
	return b
}

// readToEOF reads hd until EOF; a read that waits 20 s is an error.
// Each reply is copied into a buffer of its own and joined at the end:
// under the race detector, growing one buffer of megabytes (append's
// copy, bytes.Buffer.Grow) takes hundreds of milliseconds, long enough
// for a close to give up on a reader that makes no progress (500 ms).
func readToEOF(hd cuse.Handle) ([]byte, error) {
	var chunks [][]byte
	total := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := hd.Read(ctx, &cuse.ReadRequest{Size: 128 << 10})
		cancel()
		if err != nil {
			return bytes.Join(chunks, nil), fmt.Errorf("read after %d bytes: %w", total, err)
		}
		for _, b := range res.Data {
			c := make([]byte, len(b))
			copy(c, b)
			chunks = append(chunks, c)
			total += len(b)
		}
		n := res.Len()
		if res.Done != nil {
			res.Done(true)
		}
		if n == 0 {
			return bytes.Join(chunks, nil), nil
		}
	}
}

func fill(p []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
}

func writeAll(t *testing.T, hd cuse.Handle, p []byte) {
	for len(p) > 0 {
		chunk := p[:min(len(p), 128<<10)]
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		n, err := hd.Write(ctx, &cuse.WriteRequest{Data: [][]byte{chunk}})
		cancel()
		require.NoError(t, err)
		require.Positive(t, n)
		p = p[n:]
	}
}

// TestDocumentedWorkflow follows the kernel documentation: host2 makes the
// stream with automatic HopIDs and reads, host1 makes the name only (its
// HopIDs come from host2's announcement) and writes; CLOSE is EOF.
func TestDocumentedWorkflow(t *testing.T) {
	h1, h2, _ := twoHosts(t)
	b2 := mkItem(t, h2, "0-1.0", "backup")
	require.Equal(t, int64(0), show(t, b2, configfs.AttrIndex))
	ctx := context.Background()
	require.NoError(t, b2.Store(ctx, configfs.AttrInHopID, -1))
	require.NoError(t, b2.Store(ctx, configfs.AttrOutHopID, -1))
	require.Equal(t, int64(8), show(t, b2, configfs.AttrInHopID))
	require.Equal(t, int64(8), show(t, b2, configfs.AttrOutHopID))

	b1 := mkItem(t, h1, "0-503.0", "backup")
	require.Eventually(t, func() bool {
		return show(t, b1, configfs.AttrInHopID) == 8 && show(t, b1, configfs.AttrOutHopID) == 8
	}, 10*time.Second, 5*time.Millisecond, "host1 takes its HopIDs from host2's announcement")
	require.Equal(t, int64(0), show(t, b1, configfs.AttrIndex))

	reader := open(t, h2, "tbstream0", syscall.O_RDONLY)
	data := make([]byte, 8<<20+1234)
	fill(data, 1)
	done := make(chan []byte)
	go func() { done <- readAll(t, reader) }()

	writer := open(t, h1, "tbstream0", syscall.O_WRONLY)
	writeAll(t, writer, data)
	writer.Release(ctx)

	got := <-done
	require.Equal(t, sha256.Sum256(data), sha256.Sum256(got), "%d bytes in, %d out", len(data), len(got))
	// After the CLOSE: reads stay at EOF until reopened, writes fail.
	res, err := reader.Read(ctx, &cuse.ReadRequest{Size: 10})
	require.NoError(t, err)
	require.Zero(t, res.Len())
	_, err = reader.Write(ctx, &cuse.WriteRequest{Data: [][]byte{{1}}})
	require.ErrorIs(t, err, syscall.ENXIO)
	reader.Release(ctx)

	info := h2.Streams.Snapshot()
	require.Len(t, info, 1)
	require.Equal(t, uint64(len(data)), info[0].Streams[0].RxBytes)
}
