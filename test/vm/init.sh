#!/bin/busybox sh
# /init of the VM suite's guest (test/vm). PID 1 in a busybox initramfs
# booted from Debian's stock kernel; see test/suites.d/vm.sh for the host
# side. It loads fuse and cuse, mounts the host's root over 9p on /host (for
# `gnu CMD`), starts loopdev (CUSE loopback pipes), runs the checks and
# those of /e2e.sh if present, prints one line per check and the benchmark
# lines, and powers off:
#   VMTEST ok   - NAME: detail
#   VMTEST FAIL - NAME: detail
#   VMTEST skip - NAME: reason
#   VMBENCH NAME BYTES SECONDS
#   VMPROGRESS NAME: ...      (e2e.sh: a running step)
#   VMSTALL NAME: ...         (e2e.sh: the evidence of a step that missed its deadline)
#   VMTEST RESULT: N passed, M failed
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
exec </dev/console >/dev/console 2>&1
echo   # the serial line starts after SeaBIOS output without a newline

MIB=$(sed -n 's/.*vmtest.mib=\([0-9]*\).*/\1/p' /proc/cmdline)
MIB=${MIB:-100}
passed=0 failed=0
# Each line ends with the guest's uptime, to see where the time goes.
ok() { passed=$((passed + 1)); echo "VMTEST ok   - $* [t=$(cut -d' ' -f1 /proc/uptime)s]"; }
bad() { failed=$((failed + 1)); echo "VMTEST FAIL - $* [t=$(cut -d' ' -f1 /proc/uptime)s]"; }
skip() { echo "VMTEST skip - $* [t=$(cut -d' ' -f1 /proc/uptime)s]"; }
# mktree DIR FILES SUBDIRS: a tree for tar | gzip to carry: FILES files in
# SUBDIRS directories, every tenth one empty, every tenth a symlink, the
# rest up to 20000 bytes of busybox.
mktree() {
  local i=0 d
  mkdir -p "$1"
  while [ $i -lt "$2" ]; do
    d=$1/d$((i % $3))
    mkdir -p $d
    case $((i % 10)) in
      3) : >$d/f$i ;;
      7) ln -s f$((i - 1)) $d/f$i ;;
      *) head -c $(((i * 7919) % 20000)) /bin/busybox >$d/f$i ;;
    esac
    i=$((i + 1))
  done
}
finish() {
  echo "VMTEST RESULT: $passed passed, $failed failed"
  sync
  poweroff -f
}

if insmod /lib/modules/fuse.ko && insmod /lib/modules/cuse.ko && [ -c /dev/cuse ]; then
  ok "modules: fuse and cuse loaded, /dev/cuse present"
else
  bad "modules: insmod fuse/cuse failed"
  finish
fi

# The host's root over virtio-9p, read-only, for `gnu CMD` (test/vm/gnu.sh).
for m in $(cat /lib/modules/9p.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
if mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host 2>/tmp/9p.err &&
  out=$(gnu dd --version 2>&1 | head -n1) && [ -n "$out" ]; then
  ok "host-tools: host root on /host over 9p; gnu dd is '$out'"
else
  bad "host-tools: $(cat /tmp/9p.err) $out"
fi

# tbstream0: defaults (0600 root); tbstream1: mode option; 2, 3: clients;
# 4: benchmark pipe; 5: benchmark sink/zero source; 6: large read; 7: poll.
loopdev -stats /tmp/stats tbstream0 tbstream1:0666 tbstream2 tbstream3 tbstream4 tbstream5::null tbstream6 tbstream7 >/tmp/loopdev.log 2>&1 &
server=$!
for i in $(seq 1500); do
  [ -c /dev/tbstream7 ] && break
  sleep 0.02
done

mode0=$(stat -c '%A %u:%g' /dev/tbstream0 2>&1)
devno=$(printf '%d:%d' 0x$(stat -c %t /dev/tbstream0) 0x$(stat -c %T /dev/tbstream0))
if [ "$mode0" = "crw------- 0:0" ] && [ "$(cat /sys/class/cuse/tbstream0/dev)" = "$devno" ]; then
  ok "node: /dev/tbstream0 $mode0 (dev $(cat /sys/class/cuse/tbstream0/dev))"
else
  bad "node: /dev/tbstream0 is '$mode0'"; cat /tmp/loopdev.log
fi
mode1=$(stat -c '%A %u:%g' /dev/tbstream1 2>&1)
if [ "$mode1" = "crw-rw-rw- 0:0" ]; then
  ok "node-mode: /dev/tbstream1 $mode1 (mode option applied)"
else
  bad "node-mode: /dev/tbstream1 is '$mode1'"
fi

# dd of MIB MiB in and out, concurrently (the pipe holds 1 MiB). The data
# is the guest's binaries over and over (random bytes cost too much under
# software emulation).
while [ "$(stat -c %s /tmp/src 2>/dev/null || echo 0)" -lt $((MIB * 1048576)) ]; do
  cat /bin/loopdev /bin/vmcheck /bin/busybox /lib/modules/*.ko >>/tmp/src
done
truncate -s $((MIB * 1048576)) /tmp/src
dd if=/tmp/src of=/dev/tbstream0 bs=256k 2>/tmp/dd.w &
writer=$!
dd if=/dev/tbstream0 of=/tmp/dst bs=256k 2>/tmp/dd.r
wait $writer
if cmp /tmp/src /tmp/dst; then
  ok "dd: ${MIB} MiB in and out of /dev/tbstream0, identical"
else
  bad "dd: ${MIB} MiB round trip differs: $(cat /tmp/dd.w /tmp/dd.r)"
fi
rm -f /tmp/src /tmp/dst

# The documented command lines: tar | gzip > dev, gunzip < dev | tar x.
mkdir -p /tmp/x
(tar cf - -C / bin lib | gzip >/dev/tbstream1) &
writer=$!
gunzip </dev/tbstream1 | tar xf - -C /tmp/x
wait $writer
if diff -r /bin /tmp/x/bin >/dev/null && diff -r /lib /tmp/x/lib >/dev/null; then
  ok "tar-gzip: tar|gzip > /dev/tbstream1, gunzip < /dev/tbstream1 | tar x identical ($(find /tmp/x | wc -l) entries)"
else
  bad "tar-gzip: extracted tree differs"
fi
rm -rf /tmp/x

# A read(2) larger than one request returns what is there (128 KiB) while
# the writer stays open, instead of waiting to fill 1 MiB.
(dd if=/dev/zero bs=128k count=1 2>/dev/null; exec sleep 60) >/dev/tbstream6 &
holder=$!
got=$(timeout 30 dd if=/dev/tbstream6 bs=1M count=1 2>/dev/null | wc -c)
kill $holder 2>/dev/null
if [ "$got" = 131072 ]; then
  ok "large-read: read(2) of 1 MiB returned the 131072 bytes there, writer still open"
else
  bad "large-read: read(2) of 1 MiB returned '$got' bytes (want 131072 without waiting)"
fi

if out=$(stty -F /dev/tbstream0 2>&1); then
  bad "ioctl: stty on the device succeeded: $out"
else
  ok "ioctl: stty -F /dev/tbstream0 fails: $out"
fi

# A Go client (os.OpenFile: O_NONBLOCK + epoll) reading before the writer
# starts: EAGAIN, POLL, NOTIFY_POLL, read, until EOF. The writer starts once
# the server has answered the client EAGAIN.
again_of() {
  kill -USR1 $server
  sleep 0.05
  sed -n 's/^tbstream2 .* again=\([0-9]*\).*/\1/p' /tmp/stats 2>/dev/null
}
(for i in $(seq 600); do [ "$(again_of)" -gt 0 ] 2>/dev/null && break; done
  dd if=/dev/zero of=/dev/tbstream2 bs=64k count=160 2>/dev/null) &
writer=$!
out=$(timeout 60 vmcheck goread /dev/tbstream2 10485760 2>&1)
rc=$?
wait $writer
kill -USR1 $server
sleep 0.3
stats=$(grep '^tbstream2 ' /tmp/stats)
again=$(echo "$stats" | sed -n 's/.* again=\([0-9]*\).*/\1/p')
notifies=$(echo "$stats" | sed -n 's/.* notifies=\([0-9]*\).*/\1/p')
if [ $rc = 0 ] && [ "${again:-0}" -gt 0 ] && [ "${notifies:-0}" -gt 0 ]; then
  ok "go-nonblocking-read: $out (server: again=$again notifies=$notifies)"
else
  bad "go-nonblocking-read: rc=$rc $out; server: $stats"
fi

if out=$(timeout 60 vmcheck poll /dev/tbstream7 2>&1); then
  ok "poll: $out"
else
  bad "poll: $out"
fi

# GNU dd opening with O_NONBLOCK (busybox dd cannot): EAGAIN when empty.
if out=$(gnu dd if=/dev/tbstream7 of=/dev/null iflag=nonblock bs=4k count=1 2>&1); then
  bad "gnu-dd-nonblock: read of an empty device succeeded: $out"
elif echo "$out" | grep -q "Resource temporarily unavailable"; then
  ok "gnu-dd-nonblock: $(echo "$out" | head -n1)"
else
  bad "gnu-dd-nonblock: $out"
fi

for sig in INT KILL; do
  if out=$(vmcheck signal /dev/tbstream3 $sig 2>&1); then
    ok "sig$(echo $sig | tr A-Z a-z)-blocked-reader: $out"
  else
    bad "sig$(echo $sig | tr A-Z a-z)-blocked-reader: $out"
  fi
done

# Benchmarks, the same bytes each: /dev/zero -> /dev/null and a kernel pipe
# (baselines); dd into a CUSE sink, out of a CUSE zero source, and through
# the CUSE loopback pipe (writer and reader at once). busybox dd prints no
# rate, so vmcheck times each command. Three interleaved rounds, so that
# the guest's speed, which drifts by a third between and within runs under
# TCG, weighs on all alike; vm.sh reports each one's median.
bench() {
  t=$(vmcheck time "$2" | sed -n 's/^elapsed //p')
  echo "VMBENCH $1 $((MIB * 1048576)) $t"
}
n=$((MIB * 4))
for round in 1 2 3; do
  bench zero-null "dd if=/dev/zero of=/dev/null bs=256k count=$n 2>/dev/null"
  bench pipe "dd if=/dev/zero bs=256k count=$n 2>/dev/null | dd of=/dev/null bs=256k 2>/dev/null"
  PIPE_S=$t # seconds for MIB MiB through a kernel pipe: e2e.sh's first yardstick
  bench cuse-write "dd if=/dev/zero of=/dev/tbstream5 bs=256k count=$n 2>/dev/null"
  bench cuse-read "dd if=/dev/tbstream5 of=/dev/null bs=256k count=$n 2>/dev/null"
  bench cuse-pipe "dd if=/dev/zero of=/dev/tbstream4 bs=256k count=$n 2>/dev/null & dd if=/dev/tbstream4 of=/dev/null bs=256k 2>/dev/null; wait"
done

# Round trips of 4 KiB, p50 in µs: write and read back through the CUSE
# loopback pipe (one hop each way through the device server), beside the
# guest's TCP loopback (TCP_NODELAY ping-pong); interleaved rounds, as
# above. vm.sh reports the medians and their ratio.
ifconfig lo 127.0.0.1 up 2>/dev/null || ip link set lo up 2>/dev/null
p50() { sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p'; }
for round in 1 2 3; do
  echo "VMRTT cuse $(rtt -file /dev/tbstream4 -rounds 300 -warmup 30 2>&1 | p50)"
  echo "VMRTT tcp $(rtt -tcp -rounds 300 -warmup 30 2>&1 | p50)"
done

kill -TERM $server
wait $server
rc=$?
left=$(ls /dev/tbstream* 2>/dev/null)
if [ $rc = 0 ] && [ -z "$left" ] && [ ! -e /sys/class/cuse/tbstream0 ]; then
  ok "stop-removes-node: loopdev exited 0 on SIGTERM and the nodes are gone"
else
  bad "stop-removes-node: rc=$rc, left: $left"; cat /tmp/loopdev.log
fi

# More checks from other suites (test/vm/e2e.sh, copied in by vm.sh) run
# here with ok, bad and skip; vm.sh learns their names from that file.
if [ -f /e2e.sh ]; then
  . /e2e.sh
fi
# The USB cable checks (test/vm/usb.sh), after e2e.sh's.
if [ -f /usb.sh ]; then
  . /usb.sh
fi

# nhi/vfio against qemu's edu device behind the emulated IOMMU
# (test/vm/vfio.sh, copied in by vm.sh). Last: a device model that stops
# the machine takes no other check's result with it.
if [ -f /vfio.sh ]; then
  . /vfio.sh
fi
finish
