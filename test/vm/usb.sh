#!/bin/busybox sh
# The USB cable checks inside the VM, through real CUSE and a
# real USB link: dummy_hcd joins a gadget (host1, tbstreamd -cable
# usb-gadget:dummy_udc.0, configfs + FunctionFS) to a USB host (host2,
# tbstreamd-usb -cable usb: libusb through gousb, built with cgo and run
# with the host machine's loader and libusb over the 9p share). Sourced by
# init.sh after e2e.sh (or alone: TBSTREAM_VM_E2E=test/vm/usb.sh), which
# define ok, bad and skip.
#
#   host1 (gadget)                       host2 (USB host)
#   tbstreamd -cable usb-gadget ─ dummy_udc.0 ══ dummy_hcd ─ tbstreamd-usb -cable usb
#   /dev/host1/tbstreamN (CUSE)          /dev/host2/tbstreamN (CUSE)
#
# Every step runs under a watchdog (urun); a step that hangs fails alone.
# usb-bench compares the rate of usb-stream (the bytes counted, not
# hashed) and of the backup with a bare loopback of the same gadget and
# host code and transfer sizes (test/vm/cmd/usbbench: bytes and nothing
# else), run in rounds between usb-stream's.
UR=/sys/kernel/config/thunderbolt/stream
URUN=/run/tbstream-usb
UTB="tbstream -run $URUN"
UG=/sys/kernel/config/usb_gadget/tbstream
LIB=/host/usr/lib/x86_64-linux-gnu
UMIB=${USB_MIB:-256}
uon() { h=$1; shift; $UTB shell "$h" sh -ec "$*"; }
urecv() {
  uon host2 "mkdir -p $UR/0-1.0; mkdir $UR/0-1.0/$1
echo -1 > $UR/0-1.0/$1/in_hopid
echo -1 > $UR/0-1.0/$1/out_hopid"
}
usend() {
  uon host1 "mkdir -p $UR/0-503.0; mkdir $UR/0-503.0/$1
for i in \$(seq 600); do [ \"\$(cat $UR/0-503.0/$1/out_hopid)\" -gt 0 ] && break; sleep 0.05; done
[ \"\$(cat $UR/0-503.0/$1/out_hopid)\" -gt 0 ]"
}
uclean() { uon host1 "cd $UR/ && rmdir -p 0-503.0/$1"; uon host2 "cd $UR/ && rmdir -p 0-1.0/$1"; }
ulogs() { for h in host1 host2; do echo "--- $h log"; tail -n 15 $URUN/$h/log; done | tr '\n' '|'; }
# upaired: both hosts see the other's stream service.
upaired() { [ "$(timeout 10 $UTB list 2>/dev/null | grep -c ': stream (prtcid')" -ge 2 ]; }
# urun SECS FUNC OUT: FUNC in the background, output to OUT, killed
# (with its children) after SECS seconds.
urun() {
  rm -f /tmp/urun.rc
  ($2 >"$3" 2>&1; echo $? >/tmp/urun.rc) &
  up=$!
  i=0
  while [ ! -e /tmp/urun.rc ]; do
    sleep 1
    i=$((i + 1))
    if [ $i -ge "$1" ]; then
      vmcheck killtree $up >/dev/null 2>&1
      echo "timed out after $1 s" >>"$3"
      ureset
      return 1
    fi
  done
  rc=$(cat /tmp/urun.rc)
  [ "$rc" = 0 ] || ureset
  return "$rc"
}
# ureset: what a failed step left configured goes, so the next starts clean.
ureset() {
  for h in host1 host2; do
    uon $h "cd $UR && for g in */*; do rmdir \"\$g\" 2>/dev/null || :; done; for x in *; do rmdir \"\$x\" 2>/dev/null || :; done" >/dev/null 2>&1
  done
}
# ualive PID: PID runs (a zombie has exited: an orphan of a step's
# subshell waits for PID 1, this shell, to reap it).
ualive() {
  s=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null | cut -d' ' -f1)
  [ -n "$s" ] && [ "$s" != Z ]
}
# ustop HOST: SIGTERM HOST's daemon, if it runs, and wait until it exits.
ustop() {
  sp=$(cat $URUN/$1/pid 2>/dev/null) || return 0
  ualive "$sp" || return 0
  kill "$sp"
  for i in $(seq 100); do ualive "$sp" || return 0; sleep 0.2; done
  echo "$1 (pid $sp) did not stop within 20 s of SIGTERM"
  return 1
}
# uwait_open HOST NODE: HOST's stream on NODE is open (the writer starts
# after its reader: see test/vm/waitopen.sh).
uwait_open() { wait-open $URUN "$1" "$2"; }
uwait_paired() {
  for i in $(seq ${1:-240}); do upaired && return 0; sleep 0.5; done
  return 1
}

# ---- modules: the gadget stack and dummy_hcd, with two controller pairs:
# the daemons' cable on dummy_udc.0, the bare loopback of usb-stream's
# rounds on dummy_udc.1 (another bus, other IDs), so that the two can
# alternate while the daemons stay up.
uok=1
for m in $(cat /lib/modules/usb.order); do
  args=
  [ "$m" = dummy_hcd ] && args=num=2
  [ -f /lib/modules/$m.ko ] && { insmod /lib/modules/$m.ko $args 2>>/tmp/usb.err || uok=; }
done
grep -q " /sys/kernel/config configfs" /proc/mounts || mount -t configfs none /sys/kernel/config 2>>/tmp/usb.err
if [ -n "$uok" ] && [ -e /sys/class/udc/dummy_udc.0 ] && [ -e /sys/class/udc/dummy_udc.1 ] && [ -d /sys/kernel/config/usb_gadget ] && [ -e $LIB/libusb-1.0.so.0 ]; then
  ok "usb-modules: $(tr '\n' ' ' </lib/modules/usb.order)loaded, dummy_udc.0 and dummy_udc.1 present, configfs mounted, the host's libusb-1.0 over 9p"
else
  bad "usb-modules: $(cat /tmp/usb.err) udc: $(ls /sys/class/udc 2>&1) libusb: $(ls $LIB/libusb-1.0.so* 2>&1)"
fi

# ---- both daemons up and paired over USB.
mkdir -p $URUN/host1 $URUN/host2
tbstreamd -name host1 -run-dir $URUN/host1 -device-prefix host1/ -adapter 3 -peer-route 503 \
  -cable usb-gadget:dummy_udc.0 >$URUN/host1/log 2>&1 &
sleep 1
$LIB/ld-linux-x86-64.so.2 --library-path $LIB /bin/tbstreamd-usb -name host2 -run-dir $URUN/host2 -device-prefix host2/ \
  -adapter 1 -peer-route 1 -cable usb >$URUN/host2/log 2>&1 &
if uwait_paired 240; then
  ok "usb-up: host1 (gadget on dummy_udc.0) and host2 (libusb) cabled over USB: $(grep -m1 -o 'cable plugged.*' $URUN/host2/log)"
else
  bad "usb-up: not paired in 120 s: $(ulogs)"
fi

# ---- backup: dd bs=256k with sha256 on both sides.
: >/tmp/uimg
while [ "$(stat -c %s /tmp/uimg)" -lt $((UMIB * 1048576)) ]; do cat /bin/tbstream /bin/busybox >>/tmp/uimg; done
truncate -s $((UMIB * 1048576)) /tmp/uimg
uwant=$(sha256sum </tmp/uimg | cut -d' ' -f1)
# usendimg STREAM BENCH RECEIVER: /tmp/uimg host1 → host2 with dd bs=256k
# into RECEIVER (a command on host2), timed as VMBENCH BENCH.
usendimg() {
  urecv $1
  uon host2 "$3" &
  r=$!
  usend $1 || { echo "no HopIDs"; kill $r; return 1; }
  uwait_open host2 tbstream0 || return 1
  t0=$(cut -d' ' -f1 /proc/uptime)
  uon host1 "dd if=/tmp/uimg of=/dev/tbstream0 bs=256k 2>/dev/null"
  wait $r
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "VMBENCH $2 $((UMIB * 1048576)) $(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.3f", b - a }')"
  uclean $1
}
ubackup() {
  usendimg backup usb-backup "dd if=/dev/tbstream0 bs=256k 2>/dev/null | sha256sum > /tmp/ubackup.sum" || return 1
  [ "$(cut -d' ' -f1 /tmp/ubackup.sum)" = "$uwant" ]
}
usb_backup_s=
if urun 900 ubackup /tmp/ubackup.out; then
  grep VMBENCH /tmp/ubackup.out
  usb_backup_s=$(awk '/^VMBENCH usb-backup/ { print $4 }' /tmp/ubackup.out)
  ok "usb-backup: $UMIB MiB host1 → host2 over USB with dd bs=256k, sha256 equal (${usb_backup_s} s)"
else
  bad "usb-backup: sha256 $(cat /tmp/ubackup.sum 2>&1), want $uwant; $(tail -n 3 /tmp/ubackup.out) $(ulogs)"
fi

# ---- the cable's rate: the same bytes into /dev/null, counted by GNU dd
# (busybox dd prints no byte count; through a pipe into busybox wc the
# same transfer took three times as long). The backup's sha256sum takes
# half of the guest's two vCPUs, which the bare loopback does not hash:
# this is the like-for-like rate. Three rounds, each followed by one of
# the bare loopback (test/vm/cmd/usbbench on dummy_udc.1, ID UBARE_ID: the
# same gadget and host code and transfer sizes moving bytes and nothing
# else), so that the guest's drift under TCG weighs on both alike;
# usb-bench reports the medians.
UBARE_ID=1d6b:0105
ubare() {
  $LIB/ld-linux-x86-64.so.2 --library-path $LIB /bin/usbbench gadget $((UMIB * 1048576)) dummy_udc.1 $UBARE_ID &
  g=$!
  $LIB/ld-linux-x86-64.so.2 --library-path $LIB /bin/usbbench host $((UMIB * 1048576)) $UBARE_ID || { kill $g; return 1; }
  wait $g
}
ustream() {
  for round in 1 2 3; do
    usendimg rate usb-stream "gnu dd if=/dev/tbstream0 of=/dev/null bs=256k 2>/tmp/urate.dd" || return 1
    grep -q "^$((UMIB * 1048576)) bytes" /tmp/urate.dd || { echo "round $round: dd: $(tr '\n' ' ' </tmp/urate.dd)"; return 1; }
    ubare || { echo "round $round: the bare loopback failed"; return 1; }
  done
}
# umedian NAME FILE: the median of the three VMBENCH NAME times in FILE.
umedian() { awk -v k="$1" '$1 == "VMBENCH" && $2 == k { print $4 }' "$2" | sort -n | sed -n 2p; }
usb_stream_s= bare_s=
if urun 900 ustream /tmp/urate.out; then
  grep VMBENCH /tmp/urate.out
  usb_stream_s=$(umedian usb-stream /tmp/urate.out)
  bare_s=$(umedian usb-bare /tmp/urate.out)
  ok "usb-stream: 3 rounds of $UMIB MiB host1 → host2 over USB into dd of=/dev/null, every byte counted, each followed by the bare loopback on dummy_udc.1 ($(awk '$1 == "VMBENCH" { printf "%s %s s, ", $2, $4 }' /tmp/urate.out | sed 's/, $//'))"
else
  bad "usb-stream: $(tail -n 3 /tmp/urate.out | tr '\n' ' ') $(ulogs)"
fi
rm -f /tmp/uimg

# ---- tar | gzip of a tree, diff -r.
mktree /tmp/ut/mydir 200 10
utargz() {
  rm -rf /tmp/urecv
  mkdir -p /tmp/urecv
  urecv data
  uon host2 "cd /tmp/urecv && gunzip < /dev/tbstream0 | tar xf -" &
  r=$!
  usend data || { kill $r; return 1; }
  uwait_open host2 tbstream0 || return 1
  uon host1 "cd /tmp/ut && tar cf - mydir | gzip > /dev/tbstream0"
  wait $r
  uclean data
  diff -r /tmp/ut/mydir /tmp/urecv/mydir
}
if urun 300 utargz /tmp/utar.out; then
  ok "usb-tar-gzip: 200 entries (20 symlinks, 20 empty files) over USB, diff -r clean"
else
  bad "usb-tar-gzip: $(head -n 5 /tmp/utar.out) $(ulogs)"
fi
rm -rf /tmp/ut /tmp/urecv

# ---- two streams at once, both directions.
head -c 3000000 /bin/tbstream >/tmp/ua
head -c 2000000 /bin/busybox >/tmp/ub
utwo() {
  urecv up
  urecv down
  usend up || return 1
  usend down || return 1
  uon host2 "cat /dev/tbstream0 > /tmp/ua.recv" &
  r1=$!
  uon host1 "cat /dev/tbstream1 > /tmp/ub.recv" &
  r2=$!
  uwait_open host2 tbstream0 || return 1
  uwait_open host1 tbstream1 || return 1
  uon host1 "cat /tmp/ua > /dev/tbstream0" &
  w1=$!
  uon host2 "cat /tmp/ub > /dev/tbstream1"
  wait $w1 $r1 $r2
  uon host1 "cd $UR/ && rmdir 0-503.0/up 0-503.0/down 0-503.0"
  uon host2 "cd $UR/ && rmdir 0-1.0/up 0-1.0/down 0-1.0"
  cmp /tmp/ua /tmp/ua.recv && cmp /tmp/ub /tmp/ub.recv
}
if urun 400 utwo /tmp/utwo.out; then
  ok "usb-two-streams: 3 MB host1 → host2 and 2 MB host2 → host1 at once over USB, identical"
else
  bad "usb-two-streams: $(tail -n 3 /tmp/utwo.out) $(ulogs)"
fi
rm -f /tmp/ua /tmp/ub /tmp/ua.recv /tmp/ub.recv

# ---- GStreamer (the host machine's, through gnu): JPEG frames over USB.
ugst() {
  rm -rf /tmp/uframes
  mkdir -p /tmp/uframes
  urecv video
  uon host2 "gnu gst-launch-1.0 -q filesrc location=/dev/tbstream0 ! jpegdec ! videoconvert ! pngenc ! multifilesink location=/tmp/uframes/%05d.png" &
  r=$!
  usend video || { kill $r; return 1; }
  uwait_open host2 tbstream0 || return 1
  uon host1 "gnu gst-launch-1.0 -q videotestsrc num-buffers=30 ! jpegenc quality=90 ! filesink location=/dev/tbstream0"
  wait $r
  uclean video
  echo "$(ls /tmp/uframes | wc -l) frames"
  [ "$(ls /tmp/uframes | wc -l)" = 30 ]
}
if [ -x /host/usr/bin/gst-launch-1.0 ]; then
  export GST_PLUGIN_SYSTEM_PATH=/host/usr/lib/x86_64-linux-gnu/gstreamer-1.0 GST_REGISTRY_FORK=no GST_REGISTRY=/tmp/gst.registry
  # The plugin registry, once, before two pipelines would build it at
  # once (e2e.sh's calibration has built it when it ran first).
  [ -s /tmp/gst.registry ] || gnu gst-launch-1.0 -q videotestsrc num-buffers=1 ! jpegenc ! fakesink >/dev/null 2>&1
  # and no re-scan of the plugins (some fail to load here) at each start.
  export GST_REGISTRY_UPDATE=no
  if urun 300 ugst /tmp/ugst.out; then
    ok "usb-gstreamer: 30 JPEG frames videotestsrc → /dev/tbstream0 → USB → jpegdec, all decoded"
  else
    bad "usb-gstreamer: $(tail -n 3 /tmp/ugst.out | tr '\n' ' ') $(ulogs)"
  fi
else
  bad "usb-gstreamer: GStreamer is missing on the host, whose tools the VM borrows (test/suites.d/vm.sh installs it)"
fi
rm -rf /tmp/uframes

# ---- rmdir -p on both sides: trees empty, nodes gone.
urmdir() {
  urecv s
  usend s || return 1
  uclean s
  [ -z "$(uon host1 "ls $UR")$(uon host2 "ls $UR")" ] && [ ! -e /dev/host1/tbstream0 ] && [ ! -e /dev/host2/tbstream0 ]
}
if urun 120 urmdir /tmp/urmdir.out; then
  ok "usb-rmdir: trees empty and nodes gone on both hosts"
else
  bad "usb-rmdir: $(tail -n 3 /tmp/urmdir.out)"
fi

# ---- unplug (unbind the UDC) and re-plug: the stream re-attaches.
ureplug() {
  urecv rp
  usend rp || return 1
  head -c 1000000 /bin/busybox >/tmp/urp1
  uon host2 "head -c 1000000 /dev/tbstream0 > /tmp/urp1.recv" &
  r=$!
  uwait_open host2 tbstream0 || return 1
  uon host1 "cat /tmp/urp1 > /dev/tbstream0"
  wait $r
  cmp /tmp/urp1 /tmp/urp1.recv || return 1
  echo > $UG/UDC || return 1
  for i in $(seq 60); do upaired || break; sleep 0.5; done
  upaired && { echo "still paired after the UDC was unbound"; return 1; }
  echo dummy_udc.0 > $UG/UDC || return 1
  uwait_paired 240 || { echo "not paired again after re-binding"; return 1; }
  uon host2 "head -c 1000000 /dev/tbstream0 > /tmp/urp2.recv" &
  r=$!
  for i in $(seq 120); do [ "$(uon host1 "cat $UR/0-503.0/rp/out_hopid")" -gt 0 ] && break; sleep 0.5; done
  uwait_open host2 tbstream0 || return 1
  uon host1 "cat /tmp/urp1 > /dev/tbstream0"
  wait $r
  cmp /tmp/urp1 /tmp/urp2.recv || return 1
  uclean rp
}
if urun 400 ureplug /tmp/ureplug.out; then
  ok "usb-replug: 1 MB, UDC unbound (both hosts lost the peer), bound again, the same stream carried 1 MB more"
else
  bad "usb-replug: $(tail -n 3 /tmp/ureplug.out) $(ulogs)"
fi
rm -f /tmp/urp*

# ---- bad input: a host that sends garbage instead of a hello. The gadget
# drops it as malformed and unplugs (rebinds its UDC); the real host side
# then plugs in again.
ustart_host2() {
  $LIB/ld-linux-x86-64.so.2 --library-path $LIB /bin/tbstreamd-usb -name host2 -run-dir $URUN/host2 -device-prefix host2/ \
    -adapter 1 -peer-route 1 -cable usb >>$URUN/host2/log 2>&1 &
}
ujunk() {
  p=$(cat $URUN/host2/pid)
  kill "$p"
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$p" 2>/dev/null && { echo "host2 did not stop"; return 1; }
  n0=$(grep -c 'malformed' $URUN/host1/log)
  $LIB/ld-linux-x86-64.so.2 --library-path $LIB /bin/usbjunk || return 1
  [ "$(grep -c 'malformed' $URUN/host1/log)" -gt "$n0" ] || { echo "host1 logged no malformed frame"; return 1; }
  grep 'malformed' $URUN/host1/log | tail -n 1
  ustart_host2
  uwait_paired 240 || { echo "not paired again after the garbage"; return 1; }
}
if urun 300 ujunk /tmp/ujunk.out; then
  ok "usb-garbage: garbage on bulk OUT: $(grep -o 'usbjunk: session ended.*' /tmp/ujunk.out | cut -c1-80); host1: $(grep -o 'malformed.*' /tmp/ujunk.out | tail -n1 | cut -c1-100); the real host paired again"
else
  bad "usb-garbage: $(tail -n 4 /tmp/ujunk.out | tr '\n' ' ') $(ulogs)"
fi

# Bad inputs and tbstream up -cable usb (test/vm/usbbad.sh, staged by vm.sh).
[ -f /usbbad.sh ] && . /usbbad.sh

udown() {
  ustop host1 || return 1
  ustop host2 || return 1
  [ -d $UG ] && { echo "$UG left behind: $(ls $UG)"; return 1; }
  return 0
}
if urun 60 udown /tmp/udown.out; then
  ok "usb-down: SIGTERM stops both daemons; the gadget is gone from configfs"
else
  bad "usb-down: $(tail -n 4 /tmp/udown.out | tr '\n' ' ')"
fi

# ---- the benchmark: the medians of usb-stream's rounds and the backup
# against the bare loopback's median, all measured in this guest.
umbs() { awk -v b=$((UMIB * 1048576)) -v t="$1" 'BEGIN { printf "%.1f", b / t / 1e6 }'; }
if [ -n "$bare_s" ] && [ -n "$usb_stream_s" ] && [ -n "$usb_backup_s" ]; then
  ok "usb-bench: $UMIB MiB, bare loopback $(umbs $bare_s) MB/s; dd through CUSE, the NHI emulation and the USB cable $(umbs $usb_stream_s) MB/s, ratio $(awk -v a=$usb_stream_s -v b=$bare_s 'BEGIN { printf "%.2f", b / a }') (medians of 3 interleaved rounds); the backup with sha256sum $(umbs $usb_backup_s) MB/s, ratio $(awk -v a=$usb_backup_s -v b=$bare_s 'BEGIN { printf "%.2f", b / a }')"
else
  bad "usb-bench: no times (stream: ${usb_stream_s:-none}, bare: ${bare_s:-none}, backup: ${usb_backup_s:-none})"
fi
