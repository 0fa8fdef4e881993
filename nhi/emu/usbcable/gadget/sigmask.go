package gadget

import (
	"fmt"
	"syscall"
	"unsafe"
)

// asyncSignals are the signals blockAsyncSignals blocks.
var asyncSignals = [...]syscall.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
	syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGCHLD, syscall.SIGCONT,
	syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGURG, syscall.SIGXCPU,
	syscall.SIGXFSZ, syscall.SIGVTALRM, syscall.SIGPROF, syscall.SIGWINCH, syscall.SIGIO,
}

// sigSetSize is the kernel's sigset_t size for rt_sigprocmask(2): 64
// signals.
const sigSetSize = 8

// sigBlock is SIG_BLOCK, rt_sigprocmask's "add to the mask".
const sigBlock = 0

// blockAsyncSignals adds asyncSignals to the calling thread's signal
// mask (rt_sigprocmask: the mask is per thread).
func blockAsyncSignals() error {
	var set uint64
	for _, sig := range asyncSignals {
		set |= 1 << (uint(sig) - 1)
	}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigBlock, uintptr(unsafe.Pointer(&set)), 0, sigSetSize, 0, 0); e != 0 {
		return fmt.Errorf("rt_sigprocmask: %w", e)
	}
	return nil
}
