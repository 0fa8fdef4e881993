package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// noDAC execs argv without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: root
// that file permissions bind like anyone else (test/vm/usbbad.sh: a USB
// host daemon denied the device node). They go from the bounding and
// inheritable sets, which for root decide the permitted set after exec,
// and from the effective, permitted and ambient sets for good measure.
func noDAC(argv []string) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	// Capabilities are per thread, and execve takes the calling thread's.
	runtime.LockOSThread()
	drop := []uintptr{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH}
	for _, c := range drop {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("PR_CAPBSET_DROP %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_CAP_AMBIENT_CLEAR_ALL: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for _, c := range drop { // both below 32: the first word
		bit := uint32(1) << c
		data[0].Effective &^= bit
		data[0].Permitted &^= bit
		data[0].Inheritable &^= bit
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return syscall.Exec(path, argv, os.Environ())
}
