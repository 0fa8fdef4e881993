#!/usr/bin/env bash
# test/suites.d/vm.sh — real CUSE in a qemu VM (software emulation, no KVM).
#
#   host (root, no CUSE)                 guest (Debian's stock kernel, TCG)
#   ┌──────────────────────────┐         ┌────────────────────────────────────┐
#   │ this script: apt, kernel │  initrd │ /init (test/vm/init.sh, busybox)   │
#   │ .deb, go build, cpio ────┼────────►│  insmod fuse cuse                  │
#   │ qemu -serial stdio ◄─────┼─────────┤  loopdev ── /dev/cuse ── /dev/tbstreamN
#   │ count VMTEST lines       │ console │  dd, tar|gzip, vmcheck, signals    │
#   │ / ── virtio-9p, read-only ──────────►│  /host: GNU tools via `gnu CMD`    │
#   └──────────────────────────┘         └────────────────────────────────────┘
#
# Installs what it needs (qemu-system-x86 busybox-static cpio xz-utils zstd,
# and GStreamer, which the guest borrows from the host), resolves the kernel
# through linux-image-amd64 on every run (Debian bumps the ABI name), caches
# the .deb under test/vm/cache/, builds static Go binaries and the
# initramfs, boots, shows the guest's results, progress and stall evidence
# as they come, and prints one PASS/FAIL line per check and the benchmark
# ratios, ending with `tally: passed=N failed=M skipped=K`. The checks
# include nhi/vfio driving qemu's edu device behind an emulated IOMMU
# (test/vm/vfio.sh). A check that never reports (hang, timeout, crash)
# counts as failed. The e2e steps have
# their own deadlines (test/vm/e2e.sh); the qemu timeout is the last resort.
#
# Environment:
#   TBSTREAM_VM_TIMEOUT     seconds before qemu is killed (default 300, 1200 with e2e checks)
#   TBSTREAM_VM_MEM         guest memory in MiB (default 1024, 2048 with e2e checks)
#   TBSTREAM_VM_E2E         extra checks sourced by the guest's init (default
#                           test/vm/e2e.sh if it exists; "none" for none). Their
#                           names are the `ok|bad|skip "NAME:` words in that file;
#                           every main package under cmd/ is built into the guest.
#   TBSTREAM_VM_KERNEL_PKG  pin a kernel package instead of resolving it
#   TBSTREAM_VM_MIB         dd size in MiB for the round trip and benchmarks (default 100)
#   TBSTREAM_VM_KEEP        keep the work directory (serial log, initramfs)
#   TBSTREAM_VM_STALL       an e2e step (e2e-backup, ...) during which the guest
#                           stops host2's daemon with SIGSTOP: the step must fail
#                           with the evidence printed, and the rest still run
set -uo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
. test/lib.sh
cache=$top/test/vm/cache
mib=${TBSTREAM_VM_MIB:-100}
e2e=${TBSTREAM_VM_E2E:-test/vm/e2e.sh}
[ "$e2e" != none ] && [ ! -f "$e2e" ] && e2e=none
if [ "$e2e" != none ]; then
  timeout_s=${TBSTREAM_VM_TIMEOUT:-1200} mem=${TBSTREAM_VM_MEM:-2048}
else
  timeout_s=${TBSTREAM_VM_TIMEOUT:-300} mem=${TBSTREAM_VM_MEM:-1024}
fi

# The checks init.sh reports, in order; each is one test.
checks=(modules host-tools node node-mode dd tar-gzip large-read ioctl go-nonblocking-read
  poll gnu-dd-nonblock sigint-blocked-reader sigkill-blocked-reader stop-removes-node)
if [ "$e2e" != none ]; then
  checks+=($(grep -oE '((ok|bad|skip) "|^step )e2e-[a-z0-9-]+' "$e2e" | sed 's/.*[" ]//' | awk '!seen[$0]++'))
fi
# The USB cable checks (test/vm/usb.sh, and test/vm/usbbad.sh which it
# sources) run after the e2e ones, or alone with TBSTREAM_VM_E2E=test/vm/usb.sh.
usb_e2e=test/vm/usb.sh
if [ "$e2e" != none ]; then
  checks+=($(grep -ohE '(ok|bad|skip) "usb-[a-z0-9-]+' "$usb_e2e" test/vm/usbbad.sh | sed 's/.*"//' | awk '!seen[$0]++'))
fi
# test/vm/vfio.sh: nhi/vfio driving qemu's edu device (names in its edu_checks).
checks+=($(sed -n '/^edu_checks="/,/"$/p' test/vm/vfio.sh | grep -oE 'vfio-edu-[a-z-]+'))

work=$(mktemp -d -t tbstream-vm.XXXXXX)
if [ -n "${TBSTREAM_VM_KEEP:-}" ]; then
  echo "vm: work directory $work"
else
  at_exit 'rm -rf "$work"'
fi

# fail_all REASON: the VM could not run; every check fails with REASON.
fail_all() {
  for c in "${checks[@]}"; do fail "vm/$c: $1"; done
  tally
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  for c in "${checks[@]}"; do skip "vm/$c: needs root (apt-get, mknod /dev/console in the initramfs)"; done
  tally
  exit 0
fi

need qemu-system-x86_64 qemu-system-x86 || fail_all "cannot install qemu-system-x86"
need cpio cpio || fail_all "cannot install cpio"
need xz xz-utils || fail_all "cannot install xz-utils"
need zstd zstd || fail_all "cannot install zstd"
# busybox must be the static build: the initramfs has no libc.
need_pkg busybox-static || fail_all "cannot install busybox-static"
busybox=$(dpkg -L busybox-static | grep -m1 '/busybox$')
# The guest runs the host's GStreamer over 9p (e2e-gstreamer).
if [ "$e2e" != none ]; then
  need gst-launch-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  # The USB host daemon (test/vm/usb.sh) is a cgo build with libusb; the
  # guest runs it with the host's loader and libraries over 9p.
  need gcc gcc libc6-dev || fail_all "cannot install gcc"
  need pkg-config pkg-config || fail_all "cannot install pkg-config"
  need_pkg libusb-1.0-0-dev || fail_all "cannot install libusb-1.0-0-dev"
fi

# The kernel: resolved through linux-image-amd64 unless pinned.
[ -e "$TBSTREAM_STATE/apt-updated" ] || { apt_get update && : >"$TBSTREAM_STATE/apt-updated"; }
kpkg=${TBSTREAM_VM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')}
[ -n "$kpkg" ] || fail_all "cannot resolve linux-image-amd64 to a kernel package"
kver=${kpkg#linux-image-}
mkdir -p "$cache"
deb=$(ls "$cache/${kpkg}"_*.deb 2>/dev/null | head -n1)
if [ -z "$deb" ]; then
  echo "vm: downloading $kpkg"
  rm -f "$cache"/linux-image-*.deb
  (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null 2>&1) || fail_all "cannot download $kpkg"
  deb=$(ls "$cache/${kpkg}"_*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || fail_all "download of $kpkg left no .deb"
fi
# Modules the guest loads, in dependency order: CUSE, then the virtio-9p
# share of the host's root (for GNU tools, see test/vm/gnu.sh). Modules
# built into the kernel are simply not in the package.
fuse_modules="fs/fuse/fuse fs/fuse/cuse"
p9_modules="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache
  net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p"
# VFIO for test/vm/vfio.sh, in load order.
vfio_modules="virt/lib/irqbypass drivers/vfio/vfio drivers/vfio/vfio_virqfd drivers/vfio/vfio_iommu_type1
  drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci"
# The USB cable (test/vm/usb.sh): the gadget stack and dummy_hcd, in load order.
usb_modules="fs/configfs/configfs drivers/usb/common/usb-common drivers/usb/core/usbcore
  drivers/usb/gadget/udc/udc-core drivers/usb/gadget/libcomposite drivers/usb/gadget/function/usb_f_fs
  drivers/usb/gadget/udc/dummy_hcd"
kdir=$cache/$kver
if [ ! -s "$kdir/vmlinuz" ] || [ ! -s "$kdir/cuse.ko" ] || [ ! -f "$kdir/.modules-v4" ]; then
  echo "vm: extracting $kpkg"
  rm -rf "$kdir" "$work/x"
  mkdir -p "$kdir" "$work/x"
  globs=()
  for m in $fuse_modules $p9_modules $vfio_modules $usb_modules; do globs+=("./lib/modules/$kver/kernel/$m.ko*"); done
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/x" --wildcards --no-wildcards-match-slash \
    "./boot/vmlinuz-$kver" "${globs[@]}" 2>/dev/null
  [ -s "$work/x/boot/vmlinuz-$kver" ] || fail_all "cannot extract $deb"
  cp "$work/x/boot/vmlinuz-$kver" "$kdir/vmlinuz"
  for m in $fuse_modules $p9_modules $vfio_modules $usb_modules; do
    f=$(ls "$work/x/lib/modules/$kver/kernel/$m.ko"* 2>/dev/null | head -n1)
    name=$(basename "$m")
    if [ -z "$f" ]; then
      case $m in fs/fuse/*) fail_all "$kpkg has no $m module" ;; esac
      continue # built in
    fi
    case $f in # busybox insmod loads only uncompressed modules
      *.ko.xz) xz -dc "$f" >"$kdir/$name.ko" ;;
      *.ko.zst) zstd -qdc "$f" >"$kdir/$name.ko" ;;
      *) cp "$f" "$kdir/$name.ko" ;;
    esac || fail_all "cannot unpack $f"
  done
  touch "$kdir/.modules-v4"
  # The xz payload of vmlinuz is an ELF vmlinux that qemu boots directly
  # (PVH), sparing the slow decompressor under TCG. Optional.
  off=$(LC_ALL=C grep -aobP '\xfd7zXZ\x00' "$kdir/vmlinuz" | head -n1 | cut -d: -f1)
  if [ -n "$off" ]; then
    tail -c +$((off + 1)) "$kdir/vmlinuz" | xz -dcq >"$kdir/vmlinux" 2>/dev/null
    head -c 4 "$kdir/vmlinux" | grep -q ELF || rm -f "$kdir/vmlinux"
  fi
  rm -rf "$work/x"
fi
kernel=$kdir/vmlinuz
[ -s "$kdir/vmlinux" ] && kernel=$kdir/vmlinux

echo "vm: kernel $kpkg ($(basename "$kernel")), building the initramfs"
stage=$work/stage
mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$stage/bin/busybox"
cp test/vm/init.sh "$stage/init"
cp "$kdir"/*.ko "$stage/lib/modules/"
for m in $p9_modules; do # load order, without the built-in ones
  [ -f "$kdir/$(basename "$m").ko" ] && basename "$m"
done >"$stage/lib/modules/9p.order"
for m in $vfio_modules; do
  [ -f "$kdir/$(basename "$m").ko" ] && basename "$m"
done >"$stage/lib/modules/vfio.order"
cp test/vm/vfio.sh "$stage/vfio.sh"
for m in $usb_modules; do
  [ -f "$kdir/$(basename "$m").ko" ] && basename "$m"
done >"$stage/lib/modules/usb.order"
cp test/vm/gnu.sh "$stage/bin/gnu"
cp test/vm/waitopen.sh "$stage/bin/wait-open"
mkdir -p "$stage/host"
mknod "$stage/dev/console" c 5 1 || fail_all "mknod /dev/console"
cmds="./test/vm/cmd/loopdev ./test/vm/cmd/vmcheck ./test/vm/cmd/vfioedu ./test/bench/cmd/rtt"
if [ "$e2e" != none ]; then
  cp "$e2e" "$stage/e2e.sh"
  cp test/e2e/discover.sh "$stage/bin/discover.sh"
  cmds="$cmds ./test/vm/cmd/usbfake $(go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./cmd/... 2>/dev/null | sed 's|^tbstream/|./|')"
fi
for pkg in $cmds; do
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$stage/bin/$(basename "$pkg")" "$pkg" ||
    fail_all "go build $pkg"
done
if [ "$e2e" != none ]; then
  [ "$e2e" != "$usb_e2e" ] && cp "$usb_e2e" "$stage/usb.sh"
  cp test/vm/usbbad.sh "$stage/usbbad.sh"
  CGO_ENABLED=1 go build -tags usb -trimpath -o "$stage/bin/tbstreamd-usb" ./cmd/tbstreamd ||
    fail_all "go build -tags usb ./cmd/tbstreamd"
  # usbbad.sh's usb-tbstream-up: tbstream up -cable usb re-runs this binary.
  CGO_ENABLED=1 go build -tags usb -trimpath -o "$stage/bin/tbstream-usb" ./cmd/tbstream ||
    fail_all "go build -tags usb ./cmd/tbstream"
  for c in usbjunk usbbench; do
    CGO_ENABLED=1 go build -tags usb -trimpath -o "$stage/bin/$c" ./test/vm/cmd/$c ||
      fail_all "go build -tags usb ./test/vm/cmd/$c"
  done
fi
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initrd.gz") || fail_all "cpio"

stall=${TBSTREAM_VM_STALL:+ vmtest.stall=$TBSTREAM_VM_STALL}
# test/vm/vfio.sh: a q35 machine with qemu's emulated Intel IOMMU (first, before
# the devices it translates; interrupt remapping on, without which vfio's type-1
# IOMMU refuses the group) and the edu test device, which keeps the default
# 28-bit dma_mask. no_timer_check: with the IO-APIC behind interrupt remapping,
# the kernel panics ("timer doesn't work through Interrupt-remapped IO-APIC")
# when its early-boot check misses timer ticks, as a loaded TCG host makes it.
vfio_qemu="-machine q35 -device intel-iommu,intremap=on -device edu"
vfio_append="intel_iommu=on no_timer_check"
echo "vm: booting (timeout ${timeout_s}s)${stall:+, with$stall}"
start=$(date +%s)
# The guest's result, progress and stall lines are shown as they come.
# thread=multi (MTTCG): one host thread per vCPU. The whole suite then takes
# about half as long as with one thread for both vCPUs (370 s against 730 s
# here); a single-threaded copy in the guest is somewhat slower, and the
# guest's ratios to its own pipe stay about the same.
timeout "$timeout_s" qemu-system-x86_64 -accel tcg,thread=multi -m "$mem" -smp 2 -nographic -no-reboot \
  -nic none $vfio_qemu -kernel "$kernel" -initrd "$work/initrd.gz" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -append "console=ttyS0 quiet panic=-1 $vfio_append vmtest.mib=$mib$stall" </dev/null 2>&1 |
  tee "$work/serial.raw" | sed -u 's/\r//g' | grep --line-buffered -aE '^(VMTEST|VMPROGRESS|VMSTALL) ' | sed -u 's/^/vm guest: /'
qrc=${PIPESTATUS[0]}
echo "vm: qemu exited $qrc after $(($(date +%s) - start))s"
# Strip SeaBIOS escapes and CRs.
sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r//g' "$work/serial.raw" >"$work/serial.log"

for c in "${checks[@]}"; do
  line=$(grep -m1 -E "^VMTEST (ok  |FAIL|skip) - $c:" "$work/serial.log")
  case $line in
    "VMTEST ok   - "*) pass "vm/${line#VMTEST ok   - }" ;;
    "VMTEST FAIL - "*) fail "vm/${line#VMTEST FAIL - }" ;;
    "VMTEST skip - "*) skip "vm/${line#VMTEST skip - }" ;;
    *) fail "vm/$c: no result (qemu rc=$qrc: hang, timeout or crash)" ;;
  esac
done
if [ "$lib_failed" -gt 0 ]; then
  echo "--- serial console (last 60 lines) ---"
  tail -n 60 "$work/serial.log"
fi

# Benchmarks: MB/s of each and the ratios, measured in this run. A name
# measured in several rounds (init.sh's) is reported as its median, its
# ratios as medians of the rounds' ratios.
awk 'function median(a, n,   i, j, t) {
       for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
       return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  /^VMBENCH / { r = ++rounds[$2]; v[$2, r] = $3 / $4 / 1e6; bytes[$2] = $3; if (!($2 in seen)) { seen[$2] = 1; order[++names] = $2 } }
  END {
    for (i = 1; i <= names; i++) {
      k = order[i]; split("", a); for (r = 1; r <= rounds[k]; r++) a[r] = v[k, r]
      mbs[k] = median(a, rounds[k])
      if (rounds[k] > 1) {
        s = ""; for (r = 1; r <= rounds[k]; r++) s = s sprintf(" %.1f", v[k, r])
        printf "vm bench: %-10s %8.1f MB/s, median of %d rounds of %d bytes:%s\n", k, mbs[k], rounds[k], bytes[k], s
      } else printf "vm bench: %-10s %8.1f MB/s (%d bytes in %.3f s)\n", k, mbs[k], bytes[k], bytes[k] / mbs[k] / 1e6
    }
    n = split("cuse-write cuse-read cuse-pipe", c, " ")
    for (i = 1; i <= n; i++) {
      k = c[i]
      if (rounds[k] == 0 || rounds[k] != rounds["zero-null"] || rounds[k] != rounds["pipe"]) continue
      split("", a); split("", b)
      for (r = 1; r <= rounds[k]; r++) { a[r] = v[k, r] / v["zero-null", r]; b[r] = v[k, r] / v["pipe", r] }
      printf "vm bench: %-10s / zero-null = %.3f, / pipe = %.3f (medians of the rounds)\n", k, median(a, rounds[k]), median(b, rounds[k])
    }
    if (rtts["cuse"] > 0 && rtts["cuse"] == rtts["tcp"]) {
      split("", a); split("", b); split("", q)
      for (r = 1; r <= rtts["cuse"]; r++) { a[r] = rtt["cuse", r]; b[r] = rtt["tcp", r]; q[r] = b[r] > 0 ? a[r] / b[r] : 0 }
      printf "vm bench: RTT 4 KiB p50: CUSE loopback %.1f µs, guest TCP loopback %.1f µs, CUSE / TCP = %.2f (medians of %d rounds)\n",
        median(a, rtts["cuse"]), median(b, rtts["tcp"]), median(q, rtts["cuse"]), rtts["cuse"]
    } }
  /^VMRTT / && $3 != "" { r = ++rtts[$2]; rtt[$2, r] = $3 }' \
  "$work/serial.log"

echo "vm: $lib_passed passed, $lib_failed failed, $lib_skipped skipped"
tally
[ "$lib_failed" -eq 0 ]
