package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"tbstream/cmd/internal/daemon"
)

const streamRoot = "/sys/kernel/config/thunderbolt/stream"

// demo starts the hosts and runs the documentation's three workloads.
func demo(ctx context.Context, run string) error {
	fmt.Println("== starting two emulated hosts joined by a cable (host2 sees host1 as 0-1, host1 sees host2 as 0-503)")
	reports, err := up(ctx, run, cableShm)
	if err != nil {
		return err
	}
	for _, r := range reports {
		fmt.Println(r)
	}
	tmp, err := os.MkdirTemp("", "tbstream-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	if err := demoBackup(ctx, run, tmp); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := demoTar(ctx, run, tmp); err != nil {
		return fmt.Errorf("tar | gzip: %w", err)
	}
	if err := needGStreamer(ctx); err != nil {
		return fmt.Errorf("video: %w", err)
	}
	if err := demoVideo(ctx, run, tmp); err != nil {
		return fmt.Errorf("gstreamer: %w", err)
	}
	fmt.Print(`
== try it by hand (the hosts keep running; "tbstream down" stops them)
  sudo tbstream shell host2      # then, as in the kernel documentation:
    mkdir /sys/kernel/config/thunderbolt/stream/0-1.0
    mkdir /sys/kernel/config/thunderbolt/stream/0-1.0/backup
    echo -1 > /sys/kernel/config/thunderbolt/stream/0-1.0/backup/in_hopid
    echo -1 > /sys/kernel/config/thunderbolt/stream/0-1.0/backup/out_hopid
    dd if=/dev/tbstream0 of=/tmp/backup bs=256k
  sudo tbstream shell host1      # in a second terminal:
    mkdir /sys/kernel/config/thunderbolt/stream/0-503.0
    mkdir /sys/kernel/config/thunderbolt/stream/0-503.0/backup
    dd if=/dev/urandom of=/dev/tbstream0 bs=256k count=400
  sudo tbstream list             # hosts, services, streams and counters
(with "go run ./cmd/tbstream" in place of "tbstream" from a source tree)
`)
	return nil
}

// gstPackages are the Debian packages of the video part: gst-launch-1.0,
// videotestsrc and filesrc/filesink (base), jpegenc/jpegdec and
// multifilesink (good).
var gstPackages = []string{"gstreamer1.0-tools", "gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good"}

// needGStreamer makes gst-launch-1.0 available: when it is missing, it
// installs GStreamer with apt-get (the demo runs as root), or says the
// exact command that would.
func needGStreamer(ctx context.Context) error {
	if _, err := exec.LookPath("gst-launch-1.0"); err == nil {
		return nil
	}
	install := append([]string{"install", "-y", "-q", "--no-install-recommends"}, gstPackages...)
	command := "apt-get " + strings.Join(install, " ")
	if os.Geteuid() != 0 {
		return fmt.Errorf("gst-launch-1.0 is not installed; install it with: sudo %s", command)
	}
	fmt.Printf("== video: gst-launch-1.0 is not installed; installing GStreamer: apt-get update && %s\n", command)
	for _, args := range [][]string{{"update", "-q"}, install} {
		c := exec.CommandContext(ctx, "apt-get", args...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s\ninstall it with: %s", args[0], err, lastLines(out, 5), command)
		}
	}
	if _, err := exec.LookPath("gst-launch-1.0"); err != nil {
		return fmt.Errorf("%s succeeded, but gst-launch-1.0 is still not on PATH", command)
	}
	return nil
}

// lastLines returns the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// script runs a shell script on host and returns its combined output.
func script(ctx context.Context, run, host, text string) ([]byte, error) {
	if err := checkHostDirs(run, host); err != nil { // as shell does
		return nil, err
	}
	st, err := daemon.ReadStatus(hostDir(run, host))
	if err != nil {
		return nil, err
	}
	c := hostCommand(hostDir(run, host), st.DeviceDir, host, "sh", "-ec", text)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.Bytes(), fmt.Errorf("%s: %w\n%s", host, err, out.Bytes())
		}
		return out.Bytes(), nil
	case <-ctx.Done():
		c.Process.Kill()
		<-done
		return out.Bytes(), ctx.Err()
	}
}

// background starts a script on host; wait returns its error.
func background(ctx context.Context, run, host, text string) (wait func() error) {
	ch := make(chan error, 1)
	go func() {
		_, err := script(ctx, run, host, text)
		ch <- err
	}()
	return func() error { return <-ch }
}

// waitHopIDs waits until host's stream group/name has both HopIDs, which
// for host1 come from host2's announcement.
func waitHopIDs(ctx context.Context, run, host, group, name string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		st, err := daemon.ReadStatus(hostDir(run, host))
		if err == nil {
			for _, g := range st.Groups {
				for _, s := range g.Streams {
					if g.Name == group && s.Name == name && s.InHopID > 0 && s.OutHopID > 0 {
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: %s/%s got no HopIDs in 20 s", host, group, name)
}

// receiverSetup is host2's part of the documentation: the stream with
// automatic HopIDs.
func receiverSetup(name string) string {
	return fmt.Sprintf(`mkdir -p %[1]s/0-1.0
mkdir %[1]s/0-1.0/%[2]s
echo -1 > %[1]s/0-1.0/%[2]s/in_hopid
echo -1 > %[1]s/0-1.0/%[2]s/out_hopid
`, streamRoot, name)
}

// senderSetup is host1's: the name only.
func senderSetup(name string) string {
	return fmt.Sprintf("mkdir -p %[1]s/0-503.0\nmkdir %[1]s/0-503.0/%[2]s\n", streamRoot, name)
}

func cleanup(ctx context.Context, run, name string) error {
	if _, err := script(ctx, run, "host1", fmt.Sprintf("cd %s/ && rmdir -p 0-503.0/%s", streamRoot, name)); err != nil {
		return err
	}
	_, err := script(ctx, run, "host2", fmt.Sprintf("cd %s/ && rmdir -p 0-1.0/%s", streamRoot, name))
	return err
}

func demoBackup(ctx context.Context, run, tmp string) error {
	const size = 256 << 20
	img := filepath.Join(tmp, "nvme0n1.img")
	fmt.Printf("== backup: a %d MiB disk image from host1 to host2 with dd bs=256k\n", size>>20)
	sum, err := writeRandom(img, size)
	if err != nil {
		return err
	}
	backup := filepath.Join(tmp, "host1.nvme0n1.backup-"+time.Now().Format("2006-01-02"))
	if _, err := script(ctx, run, "host2", receiverSetup("backup")); err != nil {
		return err
	}
	waitRecv := background(ctx, run, "host2", "dd if=/dev/tbstream0 of="+backup+" bs=256k status=none")
	if _, err := script(ctx, run, "host1", senderSetup("backup")); err != nil {
		return err
	}
	if err := waitHopIDs(ctx, run, "host1", "0-503.0", "backup"); err != nil {
		return err
	}
	start := time.Now()
	if _, err := script(ctx, run, "host1", "dd if="+img+" of=/dev/tbstream0 bs=256k status=none"); err != nil {
		return err
	}
	if err := waitRecv(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	got, err := fileSum(backup)
	if err != nil {
		return err
	}
	if got != sum {
		return fmt.Errorf("sha256 differs: sent %s, received %s", sum, got)
	}
	fmt.Printf("   %d MiB in %.2f s: %.0f MB/s; sha256 %s… equal on both hosts\n", size>>20, elapsed.Seconds(), size/elapsed.Seconds()/1e6, sum[:16])
	return cleanup(ctx, run, "backup")
}

func demoTar(ctx context.Context, run, tmp string) error {
	src := filepath.Join(tmp, "mydir")
	n, bytes, err := makeTree(src, 1000)
	if err != nil {
		return err
	}
	dst := filepath.Join(tmp, "received")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	fmt.Printf("== tar | gzip: a directory of %d files (%d KiB, symlinks and empty files included)\n", n, bytes>>10)
	if _, err := script(ctx, run, "host2", receiverSetup("data")); err != nil {
		return err
	}
	waitRecv := background(ctx, run, "host2", "cd "+dst+" && gunzip < /dev/tbstream0 | tar xf -")
	if _, err := script(ctx, run, "host1", senderSetup("data")); err != nil {
		return err
	}
	if err := waitHopIDs(ctx, run, "host1", "0-503.0", "data"); err != nil {
		return err
	}
	start := time.Now()
	if _, err := script(ctx, run, "host1", "cd "+tmp+" && tar cf - mydir | gzip > /dev/tbstream0"); err != nil {
		return err
	}
	if err := waitRecv(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	if out, err := exec.Command("diff", "-r", "--no-dereference", src, filepath.Join(dst, "mydir")).CombinedOutput(); err != nil {
		return fmt.Errorf("diff -r: %v\n%s", err, out)
	}
	fmt.Printf("   %.2f s; diff -r finds no difference\n", elapsed.Seconds())
	return cleanup(ctx, run, "data")
}

func demoVideo(ctx context.Context, run, tmp string) error {
	const frames = 100
	fmt.Printf("== video: %d JPEG frames through GStreamer\n", frames)
	out := filepath.Join(tmp, "frames")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if _, err := script(ctx, run, "host2", receiverSetup("video")); err != nil {
		return err
	}
	waitRecv := background(ctx, run, "host2", "gst-launch-1.0 -q filesrc location=/dev/tbstream0 ! jpegdec ! videoconvert ! pngenc ! multifilesink location="+out+"/%05d.png")
	if _, err := script(ctx, run, "host1", senderSetup("video")); err != nil {
		return err
	}
	if err := waitHopIDs(ctx, run, "host1", "0-503.0", "video"); err != nil {
		return err
	}
	start := time.Now()
	if _, err := script(ctx, run, "host1", fmt.Sprintf("gst-launch-1.0 -q videotestsrc num-buffers=%d ! jpegenc quality=90 ! filesink location=/dev/tbstream0", frames)); err != nil {
		return err
	}
	if err := waitRecv(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	entries, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	if len(entries) != frames {
		return fmt.Errorf("%d frames decoded of %d", len(entries), frames)
	}
	fmt.Printf("   %d frames decoded on host2 in %.2f s (%.0f frames/s)\n", frames, elapsed.Seconds(), frames/elapsed.Seconds())
	return cleanup(ctx, run, "video")
}

// writeRandom writes size pseudo-random bytes to path and returns their
// sha256.
func writeRandom(path string, size int) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{'t', 'b', 's'})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= len(buf) {
		r.Read(buf)
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// makeTree creates n entries under dir: files of assorted sizes, empty
// files, nested directories and symlinks.
func makeTree(dir string, n int) (files int, total int64, err error) {
	r := rand.New(rand.NewPCG(4, 2))
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%17), fmt.Sprintf("e%d", i%5))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return 0, 0, err
		}
		p := filepath.Join(sub, fmt.Sprintf("f%04d", i))
		switch {
		case i%50 == 7:
			err = os.Symlink(fmt.Sprintf("f%04d", i-1), p)
		case i%20 == 3:
			err = os.WriteFile(p, nil, 0o644)
		default:
			size := r.IntN(64 << 10)
			line := fmt.Sprintf("line %d of file %d\n", i, i)
			b := []byte(strings.Repeat(line, size/len(line)+1))[:size]
			total += int64(size)
			err = os.WriteFile(p, b, 0o644)
		}
		if err != nil {
			return 0, 0, err
		}
		files++
	}
	return files, total, nil
}
