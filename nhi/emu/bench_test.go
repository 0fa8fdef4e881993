package emu_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"tbstream/nhi"
)

// Benchmarks of one-way bulk transfer through two emulated hosts, with the
// stream defaults (ring size 256, interrupt throttling 8192 ns). One op is
// one 4 KiB frame; each reports MB/s, frames/s, the MB/s of a copy()
// baseline timed in the same run, and ratio = transfer MB/s ÷ copy MB/s.
//
//   - Bulk*: end to end. The sender copies a 64 MiB source into TX slots
//     as write() does: one TxReserve and one TxCommit for up to benchBatch
//     frames, a 128 KiB FUSE or CUSE request. The DMA engine moves each
//     frame into the peer's RX slot, the receiver copies it out into a
//     64 MiB destination (what read() does). Baseline: copy() of the same
//     bytes from the same source to the same destination, in the same
//     4 KiB chunks.
//   - Bulk*Slots: the fabric alone. The sender stamps each TX slot in
//     place, one frame per commit, the receiver looks at RX slots in
//     place, so the DMA engine's copy is the only one. Baseline: copy()
//     between two buffers the size of the rings, which stay in cache.
func BenchmarkBulkInProcess(b *testing.B)      { benchBulk(b, "inproc", true) }
func BenchmarkBulkUnix(b *testing.B)           { benchBulk(b, "unix", true) }
func BenchmarkBulkInProcessSlots(b *testing.B) { benchBulk(b, "inproc", false) }
func BenchmarkBulkUnixSlots(b *testing.B)      { benchBulk(b, "unix", false) }
func BenchmarkBulkShm(b *testing.B)            { benchBulk(b, "shm", true) }
func BenchmarkBulkShmSlots(b *testing.B)       { benchBulk(b, "shm", false) }

const (
	benchRing     = 256  // ring_size default
	benchThrottle = 8192 // throttling default, ns
	benchBuffer   = 64 << 20
	benchRounds   = 32
	benchBatch    = 32 // frames per write(): a 128 KiB FUSE/CUSE request
)

func benchBulk(b *testing.B, kind string, endToEnd bool) {
	f := newFabric(b, kind)
	s1 := openStream(b, f.host1, lane1, 8, 8, streamOpts{size: benchRing, throttle: benchThrottle})
	s2 := openStream(b, f.host2, lane2, 8, 8, streamOpts{size: benchRing, throttle: benchThrottle})
	size := benchRing * nhi.SlotSize
	if endToEnd {
		size = benchBuffer
	}
	src, dst := make([]byte, size), make([]byte, size)
	pattern(src, 1)
	pattern(dst, 2) // fault both in before timing

	// Warm up both paths. Then time the baseline and the transfer in
	// alternating rounds, so that load from elsewhere on the machine
	// weighs on both alike.
	copyChunks(dst, src, len(src)/nhi.SlotSize)
	transfer(b, s1, s2, src, dst, 1024, endToEnd)
	b.SetBytes(nhi.SlotSize)
	b.ResetTimer()
	var dur, copyDur time.Duration
	for done := 0; done < b.N; {
		n := min(b.N-done, max(b.N/benchRounds, 1))
		b.StopTimer()
		start := time.Now()
		copyChunks(dst, src, n)
		copyDur += time.Since(start)
		b.StartTimer()
		start = time.Now()
		transfer(b, s1, s2, src, dst, n, endToEnd)
		dur += time.Since(start)
		done += n
	}
	b.StopTimer()

	total := float64(b.N) * nhi.SlotSize
	mbps, copyMBps := total/dur.Seconds()/1e6, total/copyDur.Seconds()/1e6
	b.ReportMetric(float64(b.N)/dur.Seconds(), "frames/s")
	b.ReportMetric(copyMBps, "copy-MB/s")
	b.ReportMetric(mbps/copyMBps, "ratio")
}

// copyChunks copies frames 4 KiB chunks from src to dst, wrapping around.
func copyChunks(dst, src []byte, frames int) {
	off := 0
	for range frames {
		copy(dst[off:off+nhi.SlotSize], src[off:off+nhi.SlotSize])
		off = (off + nhi.SlotSize) % len(src)
	}
}

// transfer sends frames 4 KiB frames from s1 to s2 and consumes them;
// endToEnd copies from src into TX slots and from RX slots into dst.
func transfer(tb testing.TB, s1, s2 *stream, src, dst []byte, frames int, endToEnd bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		off := 0
		var b nhi.TxBuffers
		for i := 0; i < frames; {
			want := 1
			if endToEnd {
				want = min(frames-i, benchBatch)
			}
			err := s1.tx.TxReserve(&b, want)
			if errors.Is(err, nhi.ErrRingFull) {
				if err = s1.tx.WaitTx(ctx); err == nil {
					err = s1.tx.TxReserve(&b, want)
				}
			}
			if err != nil {
				errc <- err
				return
			}
			n := 0
			for _, run := range b.Runs() {
				if endToEnd {
					for len(run) > 0 {
						c := copy(run, src[off:])
						run = run[c:]
						n += c
						off = (off + c) % len(src)
					}
				} else {
					run[0] = byte(i)
					n += nhi.SlotSize
					break
				}
			}
			sent, err := s1.tx.TxCommit(&b, n, pdfFrameStart, pdfData)
			if err != nil {
				errc <- err
				return
			}
			i += (sent + nhi.SlotSize - 1) / nhi.SlotSize
		}
		errc <- nil
	}()
	off := 0
	var ready []nhi.Frame
	for got := 0; got < frames; {
		if err := s2.waitRx(ctx); err != nil {
			tb.Fatal(err)
		}
		ready = s2.rx.RxFrames(ready[:0])
		n := len(ready)
		for i, fr := range ready {
			if len(fr.Data) != nhi.SlotSize {
				tb.Fatalf("frame %d: %d bytes", got+i, len(fr.Data))
			}
			if endToEnd {
				copy(dst[off:off+nhi.SlotSize], fr.Data)
				off = (off + nhi.SlotSize) % len(dst)
			} else if fr.Data[0] != byte(got+i) {
				tb.Fatalf("frame %d out of order", got+i)
			}
		}
		if err := s2.rx.RxRelease(n); err != nil {
			tb.Fatal(err)
		}
		got += n
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
}
