package emu_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tbstream/nhi"
	"tbstream/nhi/ctl"
	"tbstream/nhi/emu"
)

const waitLong = 10 * time.Second

// TestEverySizeBothDirections sends frames of every size 1..4096 each way
// and checks length, bytes and PDFs on arrival; the last frame is a CLOSE.
func TestEverySizeBothDirections(t *testing.T) {
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			s1 := openStream(t, f.host1, lane1, 8, 9, streamOpts{})
			s2 := openStream(t, f.host2, lane2, 9, 8, streamOpts{})

			send := func(tx *nhi.Ring, errc chan<- error) {
				ctx, cancel := context.WithTimeout(context.Background(), waitLong)
				defer cancel()
				buf := make([]byte, nhi.MaxFrameSize)
				for size := 1; size <= nhi.MaxFrameSize; size++ {
					if _, err := tx.Write(ctx, pattern(buf[:size], size), pdfFrameStart, pdfData); err != nil {
						errc <- fmt.Errorf("write %d: %w", size, err)
						return
					}
				}
				_, err := tx.Write(ctx, make([]byte, 256), pdfFrameStart, pdfClose)
				errc <- err
			}
			errc := make(chan error, 2)
			go send(s1.tx, errc)
			go send(s2.tx, errc)

			want := make([]byte, nhi.MaxFrameSize)
			for _, rx := range []*nhi.Ring{s2.rx, s1.rx} {
				for size := 1; size <= nhi.MaxFrameSize; size++ {
					fr, data := readFrame(t, rx, waitLong)
					require.Equal(t, size, len(data))
					require.Equal(t, uint8(pdfFrameStart), fr.SOF)
					require.Equal(t, uint8(pdfData), fr.EOF)
					require.Zero(t, fr.Flags)
					if !bytes.Equal(pattern(want[:size], size), data) {
						t.Fatalf("frame of %d bytes corrupted", size)
					}
				}
				fr, data := readFrame(t, rx, waitLong)
				require.Equal(t, uint8(pdfClose), fr.EOF)
				require.Equal(t, make([]byte, 256), data)
			}
			require.NoError(t, <-errc)
			require.NoError(t, <-errc)
			for _, h := range []*testHost{f.host1, f.host2} {
				c := h.emu.Counters()
				require.Zero(t, c.RxNoPath+c.RxOverflow+c.RxRingStopped+c.RxPDFMismatch+c.DMAFault, "%+v", c)
			}
		})
	}
}

// TestNoRxPathNotDelivered: frames for a HopID the receiver has no RX path
// for never reach a ring. Without E2E they are dropped and counted at the
// receiving router; with E2E no credit ever comes, so they wait at the
// sender until the path appears.
func TestNoRxPathNotDelivered(t *testing.T) {
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{}) // host2 receives on HopID 8 only

			// host1 without E2E, sending to HopID 9.
			tx, err := f.host1.nhi.AllocTxRing(nhi.RingConfig{Hop: -1, Size: 32, Flags: nhi.RingFrame})
			require.NoError(t, err)
			t.Cleanup(tx.Free)
			require.NoError(t, tx.Start())
			writePath(t, f.host1, nhiAdapter, tx.Hop(), lane1, 9)
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			for i := range 10 {
				_, err := tx.Write(ctx, pattern(make([]byte, 100), i), pdfFrameStart, pdfData)
				require.NoError(t, err)
			}
			require.NoError(t, tx.Flush(ctx)) // sent, so completed at the sender
			require.Eventually(t, func() bool { return f.host2.emu.Counters().RxNoPath == 10 }, waitLong, time.Millisecond)
			require.Zero(t, s2.rx.RxReady())

			// With E2E: the frames stay posted, nothing is dropped anywhere.
			e2e := openStream(t, f.host1, lane1, 11, 10, streamOpts{size: 32})
			for i := range 5 {
				_, err := e2e.tx.Write(ctx, pattern(make([]byte, 64), i), pdfFrameStart, pdfData)
				require.NoError(t, err)
			}
			short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancelShort()
			require.ErrorIs(t, e2e.tx.Flush(short), nhi.ErrFlushTimeout)
			require.Equal(t, 32-1-5, e2e.tx.TxFree())
			require.Equal(t, uint64(10), f.host2.emu.Counters().RxNoPath)
			require.Zero(t, f.host1.emu.Counters().TxNoPath)

			// Once host2 routes HopID 10, the credits come and the frames arrive.
			late := openStream(t, f.host2, lane2, 10, 11, streamOpts{size: 32})
			for i := range 5 {
				_, data := readFrame(t, late.rx, waitLong)
				require.Equal(t, pattern(make([]byte, 64), i), data)
			}
			require.NoError(t, e2e.tx.Flush(ctx))
			require.Zero(t, s2.rx.RxReady())
		})
	}
}

// TestBackpressureNoLoss: a receiver that stops reading stalls the sender
// through E2E credits; nothing is lost and what is queued is bounded by
// the two rings.
func TestBackpressureNoLoss(t *testing.T) {
	const ringSize, frames = 32, 500
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: ringSize})
			s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: ringSize})

			var queued atomic.Int64
			errc := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*waitLong)
				defer cancel()
				buf := make([]byte, nhi.MaxFrameSize)
				for i := range frames {
					pattern(buf, i)
					binary.BigEndian.PutUint32(buf, uint32(i))
					if _, err := s1.tx.Write(ctx, buf, pdfFrameStart, pdfData); err != nil {
						errc <- err
						return
					}
					queued.Add(1)
				}
				errc <- nil
			}()

			// Nobody reads host2: its RX ring fills, then host1's TX ring.
			require.Eventually(t, func() bool {
				return s2.rx.RxReady() == ringSize-1 && s1.tx.TxFree() == 0
			}, waitLong, time.Millisecond)
			time.Sleep(20 * time.Millisecond) // give a lossy fabric the chance to lose
			require.Equal(t, int64(2*(ringSize-1)), queued.Load())
			require.Equal(t, ringSize-1, s2.rx.RxReady())

			want := make([]byte, nhi.MaxFrameSize)
			for i := range frames {
				_, data := readFrame(t, s2.rx, waitLong)
				require.Equal(t, uint32(i), binary.BigEndian.Uint32(data), "frame order")
				pattern(want, i)
				binary.BigEndian.PutUint32(want, uint32(i))
				if !bytes.Equal(want, data) {
					t.Fatalf("frame %d corrupted", i)
				}
			}
			require.NoError(t, <-errc)
			c := f.host2.emu.Counters()
			require.Zero(t, c.RxOverflow+c.RxNoPath+c.RxRingStopped, "%+v", c)
		})
	}
}

// TestStopCancelsInFlight: frames posted but not sent are canceled by a
// ring stop and never delivered.
func TestStopCancelsInFlight(t *testing.T) {
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 32})
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			for i := range 5 {
				_, err := s1.tx.Write(ctx, pattern(make([]byte, 300), i), pdfFrameStart, pdfData)
				require.NoError(t, err)
			}
			// host2 has no RX path yet: no credits, the frames stay in flight.
			require.Equal(t, 5, s1.tx.Stop())
			require.Equal(t, uint64(5), s1.tx.Stats().Canceled)
			_, err := s1.tx.Write(ctx, []byte{1}, pdfFrameStart, pdfData)
			require.ErrorIs(t, err, nhi.ErrShutdown)

			// Restart and send a marker: it is the first frame host2 sees.
			require.NoError(t, s1.tx.Start())
			s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 32})
			_, err = s1.tx.Write(ctx, []byte("marker"), pdfFrameStart, pdfData)
			require.NoError(t, err)
			_, data := readFrame(t, s2.rx, waitLong)
			require.Equal(t, []byte("marker"), data)
			require.NoError(t, s1.tx.Flush(ctx))
			require.Zero(t, s2.rx.RxReady())
		})
	}
}

// TestControlFrames: config access to the own router, XDomain packets
// across the cable with routes rewritten to each side's view and CRC
// checked, a bad CRC dropped and counted.
func TestControlFrames(t *testing.T) {
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()

			uid, err := f.host1.ctl.ReadConfig(ctx, 0, ctl.SpaceRouter, 0, nhi.RouterCS7, 2)
			require.NoError(t, err)
			require.Equal(t, f.host1.emu.UID(), uint64(uid[0])|uint64(uid[1])<<32)

			_, err = f.host1.ctl.ReadConfig(ctx, 0x7, ctl.SpaceRouter, 0, 0, 1)
			var cfgErr *nhi.ConfigError
			require.ErrorAs(t, err, &cfgErr)
			require.Equal(t, ctl.ErrorPortNotConnected, cfgErr.Code)

			// host2 answers every XDomain request with the body reversed.
			go func() {
				for p := range f.host2.events {
					req, ok := p.(*ctl.Raw)
					if !ok || req.Kind != ctl.TypeXDomainRequest {
						continue
					}
					body := append([]uint32(nil), req.Body...)
					for i, j := 0, len(body)-1; i < j; i, j = i+1, j-1 {
						body[i], body[j] = body[j], body[i]
					}
					if req.Route != route2to1 { // host2 must see host1 at 0x1
						body = []uint32{0xbad}
					}
					f.host2.ctl.Send(ctx, &ctl.Raw{Header: ctl.Header{Route: req.Route}, Kind: ctl.TypeXDomainResponse, Body: body})
				}
			}()

			// A corrupted frame is dropped by host1's router and never crosses.
			bad, err := ctl.Encode(&ctl.Raw{Header: ctl.Header{Route: route1to2}, Kind: ctl.TypeXDomainRequest, Body: []uint32{0xdead}})
			require.NoError(t, err)
			bad[9] ^= 0x10
			require.NoError(t, f.host1.ctl.SendFrame(ctx, ctl.TypeXDomainRequest, bad))
			require.Eventually(t, func() bool { return f.host1.emu.Counters().CtlBadFrame == 1 }, waitLong, time.Millisecond)

			for n := 1; n <= ctl.MaxBodyWords-ctl.HeaderWords; n += 20 {
				body := make([]uint32, n)
				for i := range body {
					body[i] = uint32(i*0x01010101 + n)
				}
				resp, err := f.host1.ctl.Request(ctx, &ctl.Raw{Header: ctl.Header{Route: route1to2}, Kind: ctl.TypeXDomainRequest, Body: body},
					ctl.TypeXDomainResponse, nil)
				require.NoError(t, err)
				raw := resp.(*ctl.Raw)
				require.Equal(t, route1to2, raw.Route, "host1 sees the reply coming from 0x503")
				require.Len(t, raw.Body, n)
				require.Equal(t, body[0], raw.Body[n-1])
				require.Equal(t, body[n-1], raw.Body[0])
			}
			require.Zero(t, f.host2.ctl.Stats().BadFrames)
			require.Zero(t, f.host1.ctl.Stats().BadFrames)
		})
	}
}

// TestPlugUnplugEvents: plugging raises EVENTs from the router above each
// peer; closing either end raises unplug on both sides.
func TestPlugUnplugEvents(t *testing.T) {
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			// host1 sees host2 at 0x503: the event comes from router 0x3, adapter 5.
			require.Equal(t, ctl.Route(0x3), f.plug1.Route)
			require.Equal(t, uint8(5), f.plug1.Adapter)
			require.Equal(t, ctl.Route(0), f.plug2.Route)
			require.Equal(t, uint8(1), f.plug2.Adapter)

			s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 32})
			openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 32})
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			_, err := s1.tx.Write(ctx, []byte("before"), pdfFrameStart, pdfData)
			require.NoError(t, err)
			require.NoError(t, s1.tx.Flush(ctx))

			end := f.cable2
			if kind == "inproc" {
				end = f.cable1
			}
			require.NoError(t, end.Close())
			ev1 := waitEvent(t, f.host1, true)
			ev2 := waitEvent(t, f.host2, true)
			require.Equal(t, f.plug1.Route, ev1.Route)
			require.Equal(t, f.plug1.Adapter, ev1.Adapter)
			require.Equal(t, f.plug2.Route, ev2.Route)
			<-f.cable1.Done()
			<-f.cable2.Done()

			// E2E frames now wait: the credits went with the cable.
			s1.tx.Flush(ctx)
			free := s1.tx.TxFree()
			_, err = s1.tx.Write(ctx, []byte("after"), pdfFrameStart, pdfData)
			require.NoError(t, err)
			short, c2 := context.WithTimeout(ctx, 30*time.Millisecond)
			defer c2()
			require.True(t, errors.Is(s1.tx.Flush(short), nhi.ErrFlushTimeout) || free == 0)
		})
	}
}

// TestBusyPollAndSplitWrite: busy-poll rings (no interrupts) carry a
// write of n bytes as ⌈n/4096⌉ frames: full frames, then the tail.
func TestBusyPollAndSplitWrite(t *testing.T) {
	f := newFabric(t, "inproc")
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 32, flags: nhi.RingNoInterrupt})
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 32, flags: nhi.RingNoInterrupt})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	payload := pattern(make([]byte, 2*nhi.MaxFrameSize+1808), 7)
	n, err := s1.tx.Write(ctx, payload, pdfFrameStart, pdfData)
	require.NoError(t, err)
	require.Equal(t, len(payload), n)
	var got []byte
	for _, want := range []int{4096, 4096, 1808} {
		_, data := readFrame(t, s2.rx, waitLong)
		require.Len(t, data, want)
		got = append(got, data...)
	}
	require.Equal(t, payload, got)
	require.NoError(t, s1.tx.Flush(ctx))
	require.Equal(t, uint64(3), s1.tx.Stats().Completed)
}

// TestReceiverChecksCRC: the receiving control channel drops frames whose
// length or CRC is wrong and counts them; good frames reach the handler.
func TestReceiverChecksCRC(t *testing.T) {
	th := newTestHost(t, "rx")
	good, err := ctl.Encode(&ctl.Raw{Header: ctl.Header{Route: 0x1}, Kind: ctl.TypeXDomainRequest, Body: []uint32{1, 2, 3}})
	require.NoError(t, err)
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	th.emu.InjectControl(ctl.TypeXDomainRequest, bad)
	th.emu.InjectControl(ctl.TypeXDomainRequest, good[:len(good)-2]) // unaligned
	th.emu.InjectControl(ctl.TypeXDomainRequest, good)
	select {
	case p := <-th.events:
		raw, ok := p.(*ctl.Raw)
		require.True(t, ok)
		require.Equal(t, []uint32{1, 2, 3}, raw.Body)
	case <-time.After(waitLong):
		t.Fatal("good frame not delivered")
	}
	require.Equal(t, uint64(2), th.ctl.Stats().BadFrames)
	require.Equal(t, uint64(1), th.ctl.Stats().Received)
}

// TestVectoredTxSlots: a payload filled into several reserved slots at
// once (as a readv into DMA memory would) is posted as full frames plus
// the tail.
func TestVectoredTxSlots(t *testing.T) {
	f := newFabric(t, "inproc")
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: 32})
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: 32})
	payload := pattern(make([]byte, 3*nhi.MaxFrameSize+5), 3)
	var b nhi.TxBuffers
	require.NoError(t, s1.tx.TxReserve(&b, 8))
	runs := b.Runs()
	require.Len(t, runs, 1)
	require.Len(t, runs[0], 8*nhi.SlotSize)
	require.Equal(t, len(payload), copy(runs[0], payload))
	_, err := s1.tx.TxCommit(&b, 32*nhi.MaxFrameSize, pdfFrameStart, pdfData)
	require.ErrorIs(t, err, nhi.ErrInvalid, "more than the buffers hold")
	n, err := s1.tx.TxCommit(&b, len(payload), pdfFrameStart, pdfData)
	require.NoError(t, err)
	require.Equal(t, len(payload), n)
	b.Release()
	var got []byte
	for _, want := range []int{4096, 4096, 4096, 5} {
		_, data := readFrame(t, s2.rx, waitLong)
		require.Len(t, data, want)
		got = append(got, data...)
	}
	require.Equal(t, payload, got)
}

// TestPlugEventReplayed: a control channel opened after the cable was
// plugged still gets the plug EVENT.
func TestPlugEventReplayed(t *testing.T) {
	log := quietLogger()
	a, err := emu.NewHost(emu.Config{Logger: log})
	require.NoError(t, err)
	b, err := emu.NewHost(emu.Config{Logger: log})
	require.NoError(t, err)
	defer a.Close()
	defer b.Close()
	_, _, err = emu.ConnectInProcess(a, emu.Port{Adapter: 3, PeerRoute: 0x503}, b, emu.Port{Adapter: 1})
	require.NoError(t, err)

	n, err := nhi.Probe(a, nhi.Options{Logger: log})
	require.NoError(t, err)
	defer n.Close()
	events := make(chan ctl.Packet, 8)
	c, err := n.OpenControl(nhi.ControlConfig{Logger: log, Handler: func(p ctl.Packet) { events <- p }})
	require.NoError(t, err)
	defer c.Close()
	select {
	case p := <-events:
		ev, ok := p.(*ctl.Event)
		require.True(t, ok, "%T", p)
		require.Equal(t, ctl.Route(0x3), ev.Route)
		require.Equal(t, uint8(5), ev.Adapter)
		require.False(t, ev.Unplug)
	case <-time.After(waitLong):
		t.Fatal("no plug event")
	}
}

// TestRxGatherRuns: completed frames come out in place, adjacent slots
// merged into one run while the earlier frame is full; a short frame, the
// ring's end and maxRuns start or stop a run; an offset and a byte limit
// cut inside a frame; a frame with a stop PDF ends the gather untaken;
// RxRelease hands back the oldest frames.
func TestRxGatherRuns(t *testing.T) {
	f := newFabric(t, "inproc")
	const size = 8 // 7 slots
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: size})
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: size})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	send := func(n, seed int, eof uint8) []byte {
		b := pattern(make([]byte, n), seed)
		_, err := s1.tx.Write(ctx, b, pdfFrameStart, eof)
		require.NoError(t, err)
		return b
	}
	waitFrames := func(n int) {
		require.Eventually(t, func() bool { return s2.rx.RxReady() == n }, waitLong, time.Millisecond)
	}
	joined := func(runs [][]byte) []byte { return bytes.Join(runs, nil) }
	const dataEOF, closeEOF = 1 << pdfData, 1 << pdfClose

	a, b, c := send(4096, 1, pdfData), send(4096, 2, pdfData), send(100, 3, pdfData)
	d, e := send(4096, 4, pdfData), send(50, 5, pdfData)
	send(256, 6, pdfClose)
	waitFrames(6)

	g := s2.rx.RxGather(nil, 0, 1<<20, 0, closeEOF)
	require.Equal(t, []int{4096 + 4096 + 100, 4096 + 50}, lens(g.Runs), "a short frame ends a run")
	require.Equal(t, bytes.Join([][]byte{a, b, c, d, e}, nil), joined(g.Runs))
	require.Equal(t, 5, g.Frames)
	require.True(t, g.Stopped, "stops before the CLOSE frame")

	g = s2.rx.RxGather(nil, 0, 1<<20, 1, closeEOF)
	require.Equal(t, []int{4096 + 4096 + 100}, lens(g.Runs), "one run at most")
	require.Equal(t, 3, g.Frames)
	require.False(t, g.Stopped)

	g = s2.rx.RxGather(nil, 10, 5000, 0, closeEOF)
	require.Equal(t, append(a[10:], b[:5000-4086]...), joined(g.Runs), "offset into the first, limit in the second")
	require.Equal(t, 1, g.Frames)
	require.Equal(t, 5000-4086, g.Offset)

	require.NoError(t, s2.rx.RxRelease(5))
	g = s2.rx.RxGather(nil, 0, 1<<20, 0, closeEOF)
	require.Zero(t, g.Bytes)
	require.True(t, g.Stopped, "only the CLOSE frame is left")
	g = s2.rx.RxGather(nil, 0, 1<<20, 0, 0)
	require.Equal(t, 256, g.Bytes, "without a stop PDF the CLOSE frame is data like any")
	require.ErrorIs(t, s2.rx.RxRelease(2), nhi.ErrInvalid, "one frame is ready")
	require.NoError(t, s2.rx.RxRelease(1))

	// Slots 6, 7, 0, 1 now: the ring's end splits the run.
	w1, w2, w3 := send(4096, 7, pdfData), send(4096, 8, pdfData), send(4096, 9, pdfData)
	waitFrames(3)
	g = s2.rx.RxGather(nil, 0, 1<<20, 0, closeEOF)
	require.Equal(t, []int{2 * 4096, 4096}, lens(g.Runs))
	require.Equal(t, bytes.Join([][]byte{w1, w2, w3}, nil), joined(g.Runs))
	require.NoError(t, s2.rx.RxRelease(g.Frames))
	require.Zero(t, s2.rx.RxReady())
}

// TestRxFind: the search for a frame by its EOF PDF looks only at
// completed, unreleased frames, numbered from 0 at Start in order of
// arrival across the ring's wrap; with nothing found it says where a
// later search may start; released frames are never found again.
func TestRxFind(t *testing.T) {
	f := newFabric(t, "inproc")
	const size = 8 // 7 slots
	s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: size})
	s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: size})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	send := func(n int, eof uint8) {
		_, err := s1.tx.Write(ctx, make([]byte, n), pdfFrameStart, eof)
		require.NoError(t, err)
	}
	waitFrames := func(n int) {
		require.Eventually(t, func() bool { return s2.rx.RxReady() == n }, waitLong, time.Millisecond)
	}
	const closeEOF = 1 << pdfClose

	_, found, end := s2.rx.RxFind(0, closeEOF)
	require.False(t, found)
	require.Zero(t, end, "nothing completed")
	send(4096, pdfData)
	send(10, pdfData)
	waitFrames(2)
	_, found, end = s2.rx.RxFind(0, closeEOF)
	require.False(t, found)
	require.Equal(t, uint64(2), end)
	send(256, pdfClose)
	send(5, pdfData)
	waitFrames(4)
	at, found, _ := s2.rx.RxFind(end, closeEOF)
	require.True(t, found)
	require.Equal(t, uint64(2), at, "the third frame")
	at, found, _ = s2.rx.RxFind(0, 1<<pdfData)
	require.True(t, found)
	require.Zero(t, at)

	require.NoError(t, s2.rx.RxRelease(3))
	require.Equal(t, uint64(3), s2.rx.RxSeq())
	_, found, end = s2.rx.RxFind(0, closeEOF)
	require.False(t, found, "a released CLOSE is not found again")
	require.Equal(t, uint64(4), end)
	require.NoError(t, s2.rx.RxRelease(1))

	// Across the ring's end (slots 4..7, 0..2): numbers go on.
	for range 5 {
		send(100, pdfData)
	}
	send(256, pdfClose)
	waitFrames(6)
	at, found, _ = s2.rx.RxFind(4, closeEOF)
	require.True(t, found)
	require.Equal(t, uint64(9), at)
}

func lens(runs [][]byte) []int {
	var n []int
	for _, r := range runs {
		n = append(n, len(r))
	}
	return n
}

// TestCreditsInBatches: a reader that takes one frame at a time, each
// released before the next arrives, does not cost a credit grant per
// frame; and the sender never waits on credits held back (every frame
// arrives, in order).
func TestCreditsInBatches(t *testing.T) {
	const ringSize, frames = 32, 200
	for _, kind := range cableKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFabric(t, kind)
			s1 := openStream(t, f.host1, lane1, 8, 8, streamOpts{size: ringSize})
			s2 := openStream(t, f.host2, lane2, 8, 8, streamOpts{size: ringSize})
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitLong)
			defer cancel()
			before := f.host2.emu.Counters().CreditFrames
			buf := make([]byte, 64)
			for i := range frames {
				binary.BigEndian.PutUint32(buf, uint32(i))
				_, err := s1.tx.Write(ctx, buf, pdfFrameStart, pdfData)
				require.NoError(t, err)
				_, data := readFrame(t, s2.rx, waitLong)
				require.Equal(t, uint32(i), binary.BigEndian.Uint32(data), "frame order")
			}
			grants := f.host2.emu.Counters().CreditFrames - before
			require.LessOrEqual(t, grants, uint64(frames/(ringSize/4)+1), "grants for %d single-frame reads", frames)
			require.Positive(t, grants)
		})
	}
}
