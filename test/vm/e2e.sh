#!/bin/busybox sh
# The end-to-end checks of issue 6 inside the VM, through real CUSE: two
# emulated hosts (tbstream up; each host's nodes under /dev/<host>/), the
# kernel documentation's command lines run verbatim in `tbstream shell`.
# Sourced by init.sh, which defines ok, bad and skip and prints the lines
#   VMTEST ok   - e2e-NAME: detail
#   VMTEST FAIL - e2e-NAME: detail
#   VMTEST skip - e2e-NAME: reason
R=/sys/kernel/config/thunderbolt/stream
TB="tbstream -run /run/tbstream"
on() { host=$1; shift; $TB shell "$host" sh -ec "$*"; }

# receiver NAME: host2's part of the documentation; sender NAME: host1's,
# which waits for the HopIDs of host2's announcement.
receiver() {
  on host2 "mkdir -p $R/0-1.0; mkdir $R/0-1.0/$1
echo -1 > $R/0-1.0/$1/in_hopid
echo -1 > $R/0-1.0/$1/out_hopid"
}
sender() {
  on host1 "mkdir -p $R/0-503.0; mkdir $R/0-503.0/$1
for i in \$(seq 400); do [ \"\$(cat $R/0-503.0/$1/out_hopid)\" -gt 0 ] && break; sleep 0.05; done
[ \"\$(cat $R/0-503.0/$1/out_hopid)\" -gt 0 ]"
}
clean() {
  on host1 "cd $R/ && rmdir -p 0-503.0/$1" && on host2 "cd $R/ && rmdir -p 0-1.0/$1"
}

if $TB up >/tmp/up.log 2>&1 && $TB list >/tmp/list.txt 2>&1 && grep -q 'devices: cuse' /tmp/list.txt; then
  ok "e2e-up: host1 and host2 cabled, devices through CUSE, services 0-1.0 and 0-503.0 found"
else
  bad "e2e-up: $(tail -n 5 /tmp/up.log /run/tbstream/host*/log 2>&1)"
  return 0
fi

# Backup: ≥ 256 MiB, dd bs=256k, sha256 on both sides.
while [ "$(stat -c %s /tmp/img 2>/dev/null || echo 0)" -lt 268435456 ]; do
  cat /bin/tbstream /bin/busybox /lib/modules/*.ko >>/tmp/img
done
truncate -s 268435456 /tmp/img
want=$(sha256sum </tmp/img | cut -d' ' -f1)
receiver backup
on host2 "dd if=/dev/tbstream0 bs=256k 2>/tmp/backup.dd | sha256sum > /tmp/backup.sum" &
recv=$!
sender backup
t0=$(cut -d' ' -f1 /proc/uptime)
on host1 "dd if=/tmp/img of=/dev/tbstream0 bs=256k 2>/dev/null"
wait $recv
t1=$(cut -d' ' -f1 /proc/uptime)
got=$(cut -d' ' -f1 /tmp/backup.sum)
if [ "$got" = "$want" ] && [ -c /dev/host1/tbstream0 ] && [ -c /dev/host2/tbstream0 ]; then
  ok "e2e-backup: 256 MiB host1 → host2 with dd bs=256k, sha256 equal, in $(echo "$t1 $t0" | awk '{printf "%.1f", $1-$2}') s"
  echo "VMBENCH e2e-backup 268435456 $(echo "$t1 $t0" | awk '{print $1-$2}')"
else
  bad "e2e-backup: sha256 $got, want $want; $(cat /tmp/backup.dd)"
fi
clean backup
rm -f /tmp/img

# tar | gzip of a tree of 1000 files with symlinks and empty files.
mkdir -p /tmp/t/mydir /tmp/recv
i=0
while [ $i -lt 1000 ]; do
  d=/tmp/t/mydir/d$((i % 20))
  mkdir -p $d
  case $((i % 10)) in
    3) : >$d/f$i ;;
    7) ln -s f$((i - 1)) $d/f$i ;;
    *) head -c $(((i * 7919) % 20000)) /bin/busybox >$d/f$i ;;
  esac
  i=$((i + 1))
done
receiver data
on host2 "cd /tmp/recv && gunzip < /dev/tbstream0 | tar xf -" &
recv=$!
sender data
on host1 "cd /tmp/t && tar cf - mydir | gzip > /dev/tbstream0"
wait $recv
if diff -r /tmp/t/mydir /tmp/recv/mydir >/tmp/diff.txt 2>&1 && [ "$(find /tmp/recv/mydir -type l | wc -l)" = 100 ]; then
  ok "e2e-tar-gzip: 1000 entries (100 symlinks, 100 empty files), diff -r clean"
else
  bad "e2e-tar-gzip: $(head -n 5 /tmp/diff.txt)"
fi
clean data
rm -rf /tmp/t /tmp/recv

# GStreamer: the host's, run through gnu (its loader and libraries over 9p),
# with its plugins and no plugin-scanner process.
if [ -x /host/usr/bin/gst-launch-1.0 ] && [ -d /host/usr/lib/x86_64-linux-gnu/gstreamer-1.0 ]; then
  export GST_PLUGIN_SYSTEM_PATH=/host/usr/lib/x86_64-linux-gnu/gstreamer-1.0 GST_REGISTRY_FORK=no GST_REGISTRY=/tmp/gst.registry
  frames=30
  mkdir -p /tmp/frames
  receiver video
  on host2 "gnu gst-launch-1.0 -q filesrc location=/dev/tbstream0 ! jpegdec ! videoconvert ! pngenc ! multifilesink location=/tmp/frames/%05d.png" >/tmp/gst.recv 2>&1 &
  recv=$!
  sender video
  on host1 "gnu gst-launch-1.0 -q videotestsrc num-buffers=$frames ! jpegenc quality=90 ! filesink location=/dev/tbstream0" >/tmp/gst.send 2>&1
  wait $recv
  n=$(ls /tmp/frames | wc -l)
  if [ "$n" = "$frames" ]; then
    ok "e2e-gstreamer: $frames JPEG frames videotestsrc → /dev/tbstream0 → jpegdec, all decoded"
  else
    bad "e2e-gstreamer: $n of $frames frames decoded; $(tail -n 3 /tmp/gst.send /tmp/gst.recv)"
  fi
  clean video
  rm -rf /tmp/frames
else
  skip "e2e-gstreamer: GStreamer is not installed on the host, whose tools the VM borrows"
fi

# rmdir -p on both sides empties the trees and removes the nodes; the next
# mkdir gets index 0.
receiver s
sender s
clean s
if [ -z "$(on host1 "ls $R")$(on host2 "ls $R")" ] && [ ! -e /dev/host1/tbstream0 ] && [ ! -e /dev/host2/tbstream0 ]; then
  receiver again
  idx=$(on host2 "cat $R/0-1.0/again/index")
  if [ "$idx" = 0 ] && [ -c /dev/host2/tbstream0 ]; then
    ok "e2e-rmdir: trees empty, nodes gone, next mkdir gets index 0"
  else
    bad "e2e-rmdir: next index $idx"
  fi
  on host2 "cd $R/ && rmdir -p 0-1.0/again"
else
  bad "e2e-rmdir: $(on host1 "ls $R"; on host2 "ls $R"; ls /dev/host1 /dev/host2)"
fi

# Two streams at once, both directions.
: >/tmp/a; : >/tmp/b
while [ "$(stat -c %s /tmp/a)" -lt 20000000 ]; do cat /bin/tbstream >>/tmp/a; done
while [ "$(stat -c %s /tmp/b)" -lt 15000000 ]; do cat /bin/busybox >>/tmp/b; done
receiver up; receiver down
sender up; sender down
on host2 "cat /dev/tbstream0 > /tmp/a.recv" &
r1=$!
on host1 "cat /dev/tbstream1 > /tmp/b.recv" &
r2=$!
on host1 "cat /tmp/a > /dev/tbstream0" &
w1=$!
on host2 "cat /tmp/b > /dev/tbstream1"
wait $w1 $r1 $r2
if cmp /tmp/a /tmp/a.recv && cmp /tmp/b /tmp/b.recv; then
  ok "e2e-two-streams: 20 MB host1 → host2 and 15 MB host2 → host1 at once, identical"
else
  bad "e2e-two-streams: received $(stat -c %s /tmp/a.recv /tmp/b.recv)"
fi
on host1 "cd $R/ && rmdir 0-503.0/up 0-503.0/down 0-503.0"
on host2 "cd $R/ && rmdir 0-1.0/up 0-1.0/down 0-1.0"
rm -f /tmp/a /tmp/b /tmp/a.recv /tmp/b.recv

# The errno rules that depend on the device being real: O_NONBLOCK open
# without a peer, EAGAIN reads, EBUSY attributes while open.
on host2 "mkdir $R/0-7.0 $R/0-7.0/s; echo 8 > $R/0-7.0/s/in_hopid; echo 8 > $R/0-7.0/s/out_hopid"
e1=$(on host2 "vmcheck nbopen /dev/tbstream0" 2>&1)
on host2 "cd $R/ && rmdir -p 0-7.0/s"
receiver s
sender s
e2=$(on host2 "vmcheck nbread /dev/tbstream0" 2>&1)
e3=$(on host2 "exec 3<>/dev/tbstream0; echo 64 > $R/0-1.0/s/ring_size" 2>&1)
clean s
# vmcheck prints Go's lower-case strerror, the shell the C library's.
case "$e1|$e2|$e3" in
  "no such device or address|resource temporarily unavailable|"*"Device or resource busy"*)
    ok "e2e-errno: O_NONBLOCK open without a peer ENXIO, empty O_NONBLOCK read EAGAIN, attribute while open EBUSY" ;;
  *) bad "e2e-errno: '$e1' '$e2' '$e3'" ;;
esac
$TB down >/dev/null 2>&1
if [ -z "$(ls -A /dev/host1/ /dev/host2/ 2>/dev/null | grep tbstream)" ]; then
  ok "e2e-down: SIGTERM stops both daemons and removes their nodes"
else
  bad "e2e-down: left $(ls /dev/host1 /dev/host2)"
fi
