package configfs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkAttributeStore measures one store and one fresh show through the mount (a
// pwrite and a pread on open files, each a FUSE round trip), and the same two calls on a
// regular file in the same run as the baseline; it reports the ratio.
func BenchmarkAttributeStore(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("mounting FUSE with mount(2) needs root (CAP_SYS_ADMIN); run as root")
	}
	dir := b.TempDir()
	s, err := Mount(context.Background(), dir, NewMemBackend(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Unmount()
	item := filepath.Join(dir, "thunderbolt", "stream", "0-1.0", "backup")
	if err := os.MkdirAll(item, 0o755); err != nil {
		b.Fatal(err)
	}
	plain := filepath.Join(b.TempDir(), "in_hopid")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	measure := func(path string, n int) time.Duration {
		w, err := unix.Open(path, unix.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(w)
		buf := make([]byte, 16)
		start := time.Now()
		for range n {
			if _, err := unix.Pwrite(w, []byte("8\n"), 0); err != nil {
				b.Fatal(err)
			}
			r, err := unix.Open(path, unix.O_RDONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := unix.Pread(r, buf, 0); err != nil {
				b.Fatal(err)
			}
			unix.Close(r)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	mounted := measure(filepath.Join(item, "in_hopid"), b.N)
	b.StopTimer()
	baseline := measure(plain, b.N)
	b.ReportMetric(float64(mounted.Nanoseconds())/float64(b.N), "ns/store+show")
	b.ReportMetric(float64(mounted)/float64(baseline), "x-regular-file")
}
