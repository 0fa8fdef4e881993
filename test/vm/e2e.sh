#!/bin/busybox sh
# The end-to-end checks inside the VM, through real CUSE: two emulated hosts
# (tbstream up; each host's nodes under /dev/<host>/), the kernel
# documentation's command lines run verbatim in `tbstream shell`. Sourced by
# init.sh, which defines ok, bad and skip and prints the lines
#   VMTEST ok   - e2e-NAME: detail
#   VMTEST FAIL - e2e-NAME: detail
#   VMPROGRESS e2e-NAME: ...          at least every 10 s while a step runs
#   VMSTALL e2e-NAME: ...             the evidence of a step that missed its deadline
#
# Every step runs in the background under a watchdog. Its deadline is
# derived from what this guest measured at the start (e2e-calibrate): the
# stream's throughput, the cost of one `tbstream shell`, of gzip and of a
# GStreamer pipeline, times a slack of 3. A step that misses it fails alone:
# the watchdog prints both daemons' goroutine stacks (tbstream stacks) and
# every process's state, wait channel and kernel stack (vmcheck procs),
# kills the step, restarts the hosts and goes on with the next step.
#
# vmtest.stall=NAME on the kernel command line (TBSTREAM_VM_STALL in
# test/suites.d/vm.sh) stops host2's daemon with SIGSTOP two seconds into
# step NAME; e2e-watchdog does that to a small transfer on every run and
# checks that the watchdog catches it, with the evidence, and recovers.
R=/sys/kernel/config/thunderbolt/stream
RUN=/run/tbstream
TB="tbstream -run $RUN"
SLACK=3
STALL=$(sed -n 's/.*vmtest.stall=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
on() { host=$1; shift; $TB shell "$host" sh -ec "$*"; }

now_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
secs() { awk -v c="$1" 'BEGIN { printf "%.1f", c / 100 }'; }

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

# no_hopids NAME PID...: host1's sender found no HopIDs for NAME in host2's
# announcement: the step fails at once instead of waiting for a transfer
# that cannot start, and takes its background processes down.
no_hopids() {
  name=$1
  shift
  verdict bad "host1 never saw host2's HopIDs for $name: $(timeout 10 $TB list 2>&1 | tr -s ' \n' ' ')"
  for p in "$@"; do vmcheck killtree "$p" >/dev/null; done
  clean "$name"
}

# transfer NAME SRC RECEIVE: stream NAME with host2 running RECEIVE (which
# reads /dev/tbstream0) in the background and host1 sending SRC with dd
# bs=256k; /tmp/transfer.cs holds how long it took from host1's dd start.
transfer() {
  receiver "$1"
  on host2 "$3" &
  recv=$!
  sender "$1" || { no_hopids "$1" $recv; return 1; }
  wait-open $RUN host2 tbstream0 || return 1
  t0=$(now_cs)
  on host1 "dd if=$2 of=/dev/tbstream0 bs=256k 2>/dev/null"
  wait $recv
  echo $(($(now_cs) - t0)) >/tmp/transfer.cs
}

# moved: bytes the hosts' streams have received so far (tbstream list).
moved() {
  timeout 10 $TB list 2>/dev/null |
    awk '$1 ~ /^[0-9]+-[0-9a-fA-F]+\.[0-9]+$/ && NF >= 14 { rx += $(NF - 3) } END { printf "%d", rx }'
}

# verdict ok|bad DETAIL: a step's result, read by step.
verdict() { echo "$*" >/tmp/step.verdict; }

# stall_host2: the test hook, SIGSTOP host2's daemon.
stall_host2() {
  kill -STOP "$(cat $RUN/host2/pid)" && echo "VMPROGRESS hook: host2's daemon (pid $(cat $RUN/host2/pid)) stopped with SIGSTOP"
}

# evidence: what the daemons and every process are doing.
evidence() {
  echo "--- tbstream list"
  timeout 10 $TB list 2>&1
  for h in host1 host2; do
    dpid=$(cat $RUN/$h/pid 2>/dev/null)
    echo "$h daemon pid ${dpid:-?}: $(grep '^State' /proc/${dpid:-0}/status 2>/dev/null)"
    timeout 10 $TB stacks $h 2>&1 || echo "$h: no goroutine stacks (a stopped or stuck daemon does not answer)"
  done
  vmcheck procs
  for h in host1 host2; do
    echo "--- $h log (last 20 lines)"
    tail -n 20 $RUN/$h/log
  done
}

# recover: the hosts as new after a stuck step (a stopped or wedged daemon
# included), so the following steps run on a clean pair.
recover() {
  for h in host1 host2; do
    dpid=$(cat $RUN/$h/pid 2>/dev/null) && kill -CONT "$dpid" 2>/dev/null
  done
  $TB down >/dev/null 2>&1
  for h in host1 host2; do
    dpid=$(cat $RUN/$h/pid 2>/dev/null) && kill -KILL "$dpid" 2>/dev/null
  done
  sleep 1
  grep " $RUN/" /proc/mounts | awk '{ print $2 }' | while read -r m; do umount -l "$m"; done
  rm -f $RUN/*/pid $RUN/*/status.sock
  $TB up >/tmp/up.log 2>&1
}

# step NAME BYTES SHELLS CPU_CS FUNC: runs FUNC in the background; FUNC
# reports with verdict. The deadline covers BYTES through a stream, SHELLS
# tbstream shell start-ups and CPU_CS centiseconds of measured work, times
# SLACK, plus 10 s. Progress is printed every 10 s. With EXPECT_STALL set, a
# missed deadline is what the caller wants: no FAIL line, status 0.
step() {
  name=$1 bytes=$2 shells=$3 cpu=$4 fn=$5
  deadline=$(awk -v b="$bytes" -v r="$RATE" -v s="$shells" -v sh="$SHELL_CS" -v c="$cpu" -v k=$SLACK \
    'BEGIN { printf "%d", k * (b / r + (s * sh + c) / 100) + 10 }')
  why="$bytes bytes at $(awk -v r="$RATE" 'BEGIN { printf "%.1f", r / 1e6 }') MB/s, $shells shells of $(secs "$SHELL_CS") s, $(secs "$cpu") s of work, x$SLACK + 10 s"
  rm -f /tmp/step.verdict /tmp/step.done
  (
    $fn >/tmp/step.out 2>&1
    : >/tmp/step.done
  ) &
  spid=$!
  [ "$STALL" = "$name" ] && (sleep 2; stall_host2) &
  t0=$(now_cs) last=$(now_cs) best=0
  stalled=
  while [ ! -e /tmp/step.done ]; do
    sleep 1
    t=$(now_cs)
    if [ $((t - t0)) -ge $((deadline * 100)) ]; then
      stalled=1
      break
    fi
    if [ $((t - last)) -ge 1000 ]; then
      last=$t
      # The most seen: a stream removed at the end of the step counts no more.
      m=$(moved)
      [ "$m" -gt "$best" ] && best=$m
      echo "VMPROGRESS $name: $best bytes received, $(secs $((t - t0))) s of $deadline s"
    fi
  done
  t=$(now_cs)
  if [ -n "$stalled" ]; then
    got=$(moved)
    echo "VMSTALL $name: no result after $deadline s ($why), $got bytes received; what the daemons and processes are doing:"
    evidence 2>&1 | sed "s/^/VMSTALL $name: /"
    echo "VMSTALL $name: the step's output:"
    sed "s/^/VMSTALL $name: /" /tmp/step.out
    echo "VMSTALL $name: $(vmcheck killtree $spid)"
    if recover; then
      echo "VMSTALL $name: hosts restarted"
    else
      echo "VMSTALL $name: hosts did not come back: $(tail -n 3 /tmp/up.log)"
    fi
    [ -n "${EXPECT_STALL:-}" ] && return 0
    bad "$name: missed its deadline of $deadline s at $got bytes; stacks and process states printed (VMSTALL)"
    return 1
  fi
  wait $spid
  if [ -n "${EXPECT_STALL:-}" ]; then
    echo "VMPROGRESS $name: ended by itself in $(secs $((t - t0))) s: $(cat /tmp/step.verdict 2>/dev/null)"
    return 1
  fi
  echo "VMPROGRESS $name: done in $(secs $((t - t0))) s of $deadline s"
  v=$(cat /tmp/step.verdict 2>/dev/null)
  case $v in
    ok\ *) ok "$name: ${v#ok }" ;;
    bad\ *) bad "$name: ${v#bad }" ;;
    *) bad "$name: ended without a verdict: $(tail -n 5 /tmp/step.out)" ;;
  esac
}

if $TB up >/tmp/up.log 2>&1 && $TB list >/tmp/list.txt 2>&1 && grep -q 'devices: cuse' /tmp/list.txt; then
  ok "e2e-up: host1 and host2 cabled, devices through CUSE, services 0-1.0 and 0-503.0 found"
else
  bad "e2e-up: $(tail -n 5 /tmp/up.log $RUN/host*/log 2>&1)"
  return 0
fi

# ---- calibration: what this guest does per second, for the deadlines.
t0=$(now_cs)
on host1 true
on host2 true
SHELL_CS=$((($(now_cs) - t0) / 2))
head -c 4194304 /bin/tbstream >/tmp/cal.src
t0=$(now_cs)
gzip -c </tmp/cal.src >/tmp/cal.gz
gunzip -c </tmp/cal.gz >/dev/null
GZIP_CS=$(($(now_cs) - t0)) # 4 MiB through gzip and gunzip
rm -f /tmp/cal.gz
GST_CS=0
if [ -x /host/usr/bin/gst-launch-1.0 ]; then
  export GST_PLUGIN_SYSTEM_PATH=/host/usr/lib/x86_64-linux-gnu/gstreamer-1.0 GST_REGISTRY_FORK=no GST_REGISTRY=/tmp/gst.registry
  t0=$(now_cs)
  gnu gst-launch-1.0 -q videotestsrc num-buffers=30 ! jpegenc quality=90 ! jpegdec ! videoconvert ! pngenc ! fakesink >/dev/null 2>&1
  GST_CS=$(($(now_cs) - t0))
fi
# The stream: 8 MiB host1 → host2, under a deadline from the kernel pipe's
# rate in this guest (init.sh's benchmark), which tbstream under TCG has
# so far reached a tenth to a fortieth of.
RATE=$(awk -v m="$MIB" -v t="${PIPE_S:-1}" 'BEGIN { printf "%d", m * 1048576 / t / 100 }')
cal_mib=16
head -c $((cal_mib * 1048576)) /dev/zero >/tmp/cal.src
calibrate() {
  transfer cal /tmp/cal.src "dd if=/dev/tbstream0 bs=256k 2>/dev/null | wc -c > /tmp/cal.got" || return
  # The time includes host1's shell start-up, which the deadlines count
  # apart.
  t=$(cat /tmp/transfer.cs)
  cs=$((t - SHELL_CS))
  [ $cs -lt $((t / 4)) ] && cs=$((t / 4))
  echo $cs >/tmp/cal.cs
  clean cal
  if [ "$(cat /tmp/cal.got)" = $((cal_mib * 1048576)) ]; then
    verdict ok "$cal_mib MiB in $(secs $cs) s; one tbstream shell $(secs "$SHELL_CS") s, 4 MiB gzip+gunzip $(secs "$GZIP_CS") s, 30 GStreamer frames $(secs "$GST_CS") s"
  else
    verdict bad "received $(cat /tmp/cal.got) bytes of $((cal_mib * 1048576))"
  fi
}
step e2e-calibrate $((cal_mib * 1048576)) 6 0 calibrate
cal_cs=$(cat /tmp/cal.cs 2>/dev/null || echo 0)
if [ "$cal_cs" -gt 0 ]; then
  RATE=$((cal_mib * 1048576 * 100 / cal_cs))
fi
rm -f /tmp/cal.src /tmp/cal.cs /tmp/cal.got /tmp/transfer.cs

# ---- Backup: 256 MiB, dd bs=256k, sha256 on both sides.
while [ "$(stat -c %s /tmp/img 2>/dev/null || echo 0)" -lt 268435456 ]; do
  cat /bin/tbstream /bin/busybox /lib/modules/*.ko >>/tmp/img
done
truncate -s 268435456 /tmp/img
want=$(sha256sum </tmp/img | cut -d' ' -f1)
backup() {
  transfer backup /tmp/img "dd if=/dev/tbstream0 bs=256k 2>/tmp/backup.dd | sha256sum > /tmp/backup.sum" || return
  t=$(cat /tmp/transfer.cs)
  got=$(cut -d' ' -f1 /tmp/backup.sum)
  if [ "$got" = "$want" ] && [ -c /dev/host1/tbstream0 ] && [ -c /dev/host2/tbstream0 ]; then
    verdict ok "256 MiB host1 → host2 with dd bs=256k, sha256 equal, in $(secs "$t") s"
    echo "VMBENCH e2e-backup 268435456 $(secs "$t")" >/tmp/backup.bench
  else
    verdict bad "sha256 $got, want $want; $(cat /tmp/backup.dd)"
  fi
  clean backup
}
# The receiver's sha256 of 256 MiB is measured work too: a 16th of it,
# timed here.
t0=$(now_cs)
head -c 16777216 /tmp/img | sha256sum >/dev/null
sha_cs=$((($(now_cs) - t0) * 16))
step e2e-backup 268435456 6 $sha_cs backup
cat /tmp/backup.bench 2>/dev/null
head -c 67108864 /tmp/img >/tmp/disc.in
rm -f /tmp/img /tmp/backup.bench

# ---- What a tool written for the kernel driver does
# (/bin/discover.sh, test/e2e/discover.sh): modprobe, discovery by key and
# driver in /sys/bus/thunderbolt, the peer's identity, ring_size and
# throttling before the HopIDs, index to /dev/tbstreamN, which must be a
# character device 600 root:root, every attribute, then 64 MiB by sha256.
# It runs under the host's bash: busybox sh runs its own modprobe applet
# whatever PATH says, so the shell's modprobe would not be asked.
discover() {
  want=$(sha256sum </tmp/disc.in | cut -d' ' -f1)
  on host2 "TBSTREAM_REQUIRE_CHR=1 gnu bash /bin/discover.sh recv disc /tmp/disc.out" >/tmp/disc.recv 2>&1 &
  rp=$!
  on host1 "TBSTREAM_REQUIRE_CHR=1 gnu bash /bin/discover.sh send disc /tmp/disc.in" >/tmp/disc.send 2>&1
  s=$?
  wait $rp
  r=$?
  if [ $s = 0 ] && [ $r = 0 ] && grep -q "^sent $want\$" /tmp/disc.send && grep -q "^received $want\$" /tmp/disc.recv &&
    grep -q "^link: rx 1 x 20.0 Gb/s" /tmp/disc.recv; then
    verdict ok "discover.sh on both hosts: $(grep '^service' /tmp/disc.recv), 64 MiB sha256 equal"
  else
    verdict bad "send $s: $(tr '\n' ' ' </tmp/disc.send) recv $r: $(tr '\n' ' ' </tmp/disc.recv)"
  fi
  rm -f /tmp/disc.out
}
step e2e-discover 67108864 4 $((sha_cs / 2)) discover
rm -f /tmp/disc.in /tmp/disc.send /tmp/disc.recv

# ---- tar | gzip of a tree of 1000 files with symlinks and empty files.
mktree /tmp/t/mydir 1000 20
tree_bytes=$(du -sk /tmp/t | awk '{ print $1 * 1024 }')
targz() {
  rm -rf /tmp/recv
  mkdir -p /tmp/recv
  receiver data
  on host2 "cd /tmp/recv && gunzip < /dev/tbstream0 | tar xf -" &
  recv=$!
  sender data || { no_hopids data $recv; return; }
  wait-open $RUN host2 tbstream0 || { verdict bad "the receiver did not open"; return; }
  on host1 "cd /tmp/t && tar cf - mydir | gzip > /dev/tbstream0"
  wait $recv
  if diff -r /tmp/t/mydir /tmp/recv/mydir >/tmp/diff.txt 2>&1 && [ "$(find /tmp/recv/mydir -type l | wc -l)" = 100 ]; then
    verdict ok "1000 entries (100 symlinks, 100 empty files), diff -r clean"
  else
    verdict bad "$(head -n 5 /tmp/diff.txt)"
  fi
  clean data
}
step e2e-tar-gzip "$tree_bytes" 6 $((GZIP_CS * tree_bytes / 4194304)) targz
rm -rf /tmp/t /tmp/recv

# ---- The watchdog itself: host2's daemon stopped in the middle of a
# transfer must be caught, shown and recovered from.
# An endless dd, host2's daemon stopped once bytes flow: the step can only
# end by the watchdog.
stallme() {
  receiver stall
  on host2 "dd if=/dev/tbstream0 of=/dev/null bs=256k" &
  sender stall
  on host1 "dd if=/dev/zero of=/dev/tbstream0 bs=256k" &
  for i in $(seq 60); do [ "$(moved)" -gt 0 ] && break; sleep 0.5; done
  stall_host2
  wait
  verdict bad "the transfer ended although host2's daemon was stopped"
}
EXPECT_STALL=1
step e2e-watchdog 4194304 5 0 stallme >/tmp/watchdog.out 2>&1
caught=$?
EXPECT_STALL=
if [ $caught = 0 ] &&
  grep -q "^VMSTALL e2e-watchdog: host2 daemon pid [0-9]*: State:.*T (stopped)" /tmp/watchdog.out &&
  grep -q "^VMSTALL e2e-watchdog: tbstreamd host1 (pid [0-9]*), [0-9]* goroutines" /tmp/watchdog.out &&
  grep -q "^VMSTALL e2e-watchdog: hosts restarted" /tmp/watchdog.out; then
  cat /tmp/watchdog.out
  ok "e2e-watchdog: the step with host2's daemon stopped missed its deadline; the evidence shows it stopped and host1's goroutines; hosts restarted"
else
  cat /tmp/watchdog.out
  bad "e2e-watchdog: the stalled step was not caught, shown and recovered from as it should be (see above)"
fi
rm -f /tmp/watchdog.out

# ---- GStreamer: the host's, run through gnu (its loader and libraries over
# 9p), with its plugins and no plugin-scanner process. vm.sh installs it.
frames=30
video() {
  rm -rf /tmp/frames
  mkdir -p /tmp/frames
  receiver video
  on host2 "gnu gst-launch-1.0 -q filesrc location=/dev/tbstream0 ! jpegdec ! videoconvert ! pngenc ! multifilesink location=/tmp/frames/%05d.png" >/tmp/gst.recv 2>&1 &
  recv=$!
  sender video || { no_hopids video $recv; return; }
  wait-open $RUN host2 tbstream0 || { verdict bad "the receiver did not open"; return; }
  on host1 "gnu gst-launch-1.0 -q videotestsrc num-buffers=$frames ! jpegenc quality=90 ! filesink location=/dev/tbstream0" >/tmp/gst.send 2>&1
  wait $recv
  n=$(ls /tmp/frames | wc -l)
  if [ "$n" = "$frames" ]; then
    verdict ok "$frames JPEG frames videotestsrc → /dev/tbstream0 → jpegdec, all decoded"
  else
    verdict bad "$n of $frames frames decoded; $(tail -n 3 /tmp/gst.send /tmp/gst.recv)"
  fi
  clean video
}
if [ -x /host/usr/bin/gst-launch-1.0 ] && [ -d /host/usr/lib/x86_64-linux-gnu/gstreamer-1.0 ]; then
  step e2e-gstreamer 3000000 6 $((GST_CS * 2)) video
  rm -rf /tmp/frames
else
  bad "e2e-gstreamer: GStreamer is missing on the host, whose tools the VM borrows (test/suites.d/vm.sh installs it)"
fi

# ---- rmdir -p on both sides empties the trees and removes the nodes; the
# next mkdir gets index 0.
rmdirs() {
  receiver s
  sender s || { no_hopids s; return; }
  clean s
  if [ -z "$(on host1 "ls $R")$(on host2 "ls $R")" ] && [ ! -e /dev/host1/tbstream0 ] && [ ! -e /dev/host2/tbstream0 ]; then
    receiver again
    idx=$(on host2 "cat $R/0-1.0/again/index")
    if [ "$idx" = 0 ] && [ -c /dev/host2/tbstream0 ]; then
      verdict ok "trees empty, nodes gone, next mkdir gets index 0"
    else
      verdict bad "next index $idx"
    fi
    on host2 "cd $R/ && rmdir -p 0-1.0/again"
  else
    verdict bad "$(on host1 "ls $R"; on host2 "ls $R"; ls /dev/host1 /dev/host2)"
  fi
}
step e2e-rmdir 0 10 0 rmdirs

# ---- Two streams at once, both directions.
: >/tmp/a
: >/tmp/b
while [ "$(stat -c %s /tmp/a)" -lt 20000000 ]; do cat /bin/tbstream >>/tmp/a; done
while [ "$(stat -c %s /tmp/b)" -lt 15000000 ]; do cat /bin/busybox >>/tmp/b; done
twostreams() {
  receiver up
  receiver down
  sender up || { no_hopids up; return; }
  sender down || { no_hopids down; return; }
  on host2 "cat /dev/tbstream0 > /tmp/a.recv" &
  r1=$!
  on host1 "cat /dev/tbstream1 > /tmp/b.recv" &
  r2=$!
  wait-open $RUN host2 tbstream0 && wait-open $RUN host1 tbstream1 || { verdict bad "a receiver did not open"; return; }
  on host1 "cat /tmp/a > /dev/tbstream0" &
  w1=$!
  on host2 "cat /tmp/b > /dev/tbstream1"
  wait $w1 $r1 $r2
  if cmp /tmp/a /tmp/a.recv && cmp /tmp/b /tmp/b.recv; then
    verdict ok "20 MB host1 → host2 and 15 MB host2 → host1 at once, identical"
  else
    verdict bad "received $(stat -c %s /tmp/a.recv /tmp/b.recv)"
  fi
  on host1 "cd $R/ && rmdir 0-503.0/up 0-503.0/down 0-503.0"
  on host2 "cd $R/ && rmdir 0-1.0/up 0-1.0/down 0-1.0"
}
step e2e-two-streams $(($(stat -c %s /tmp/a) + $(stat -c %s /tmp/b))) 10 0 twostreams
rm -f /tmp/a /tmp/b /tmp/a.recv /tmp/b.recv

# ---- Sessions (cmd/internal/stream's package doc, "Sessions"), through
# real CUSE: back-to-back short sessions, a writer whose reader leaves,
# a blocked writer killed and a new session at once. Each host runs its
# side of every round in one shell, stepping with the other through files
# in /tmp/ses; the verdict counts the rounds that went wrong.
SES=/tmp/ses
seslib='step() { : > /tmp/ses/$1; }
await() { local w=0; until [ -e /tmp/ses/$1 ]; do sleep 0.005; w=$((w + 1)); [ $w -lt 12000 ] || { echo "waited 60 s for $1" >&2; exit 1; }; done; }
opened() { until ls -l /proc/$1/fd 2>/dev/null | grep -q "tbstream[0-9]"; do kill -0 $1 2>/dev/null || return 0; sleep 0.002; done; }
'
sessions_run() { # HOST1_SCRIPT HOST2_SCRIPT
  on host2 "$seslib$2" >/tmp/ses.h2 2>&1 &
  h2=$!
  on host1 "$seslib$1" >/tmp/ses.h1 2>&1
  s1=$?
  wait $h2
  s2=$?
  [ $s1 = 0 ] && [ $s2 = 0 ] || { verdict bad "host1 $s1: $(tail -n 3 /tmp/ses.h1) host2 $s2: $(tail -n 3 /tmp/ses.h2)"; return 1; }
}
backtoback() {
  rm -rf $SES && mkdir -p $SES
  receiver b2b
  sender b2b || { no_hopids b2b; return; }
  n=100
  sessions_run "for i in \$(seq $n); do await open.\$i; printf '%04d message of the back-to-back run\\n' \$i > /dev/tbstream0; done" \
    "for i in \$(seq $n); do head -c 10 /dev/tbstream0 > $SES/got.\$i & p=\$!; opened \$p; step open.\$i; wait \$p; done" || { clean b2b; return; }
  wrong=0 foreign=0 first=
  for i in $(seq $n); do
    got=$(cat $SES/got.$i 2>/dev/null)
    [ "$got" = "$(printf '%04d messa' $i)" ] && continue
    case $got in [0-9][0-9][0-9][0-9]\ *) foreign=$((foreign + 1)) ;; *) wrong=$((wrong + 1)) ;; esac
    [ -n "$first" ] || first="round $i got '$got'"
  done
  clean b2b
  if [ $wrong = 0 ] && [ $foreign = 0 ]; then
    verdict ok "$n rounds of head -c 10 against printf > /dev/tbstream0: every reader got its own message"
  else
    verdict bad "$n rounds: $foreign readers with another round's message, $wrong with none or garbage; $first"
  fi
}
step e2e-sessions-back-to-back 0 4 2000 backtoback

readerleft() {
  rm -rf $SES && mkdir -p $SES
  receiver left
  sender left || { no_hopids left; return; }
  n=20
  sessions_run "for i in \$(seq $n); do await open.\$i; yes \"round \$i\" | dd of=/dev/tbstream0 bs=256k 2>$SES/err.\$i || true; step wdone.\$i; done" \
    "for i in \$(seq $n); do dd if=/dev/tbstream0 of=$SES/got.\$i bs=4k count=1 2>/dev/null & p=\$!; opened \$p; step open.\$i; wait \$p; await wdone.\$i; done" || { clean left; return; }
  told=0 wrong=0 first=
  for i in $(seq $n); do
    if grep -q "No such device or address" $SES/err.$i; then told=$((told + 1)); else wrong=$((wrong + 1)); [ -n "$first" ] || first="round $i: writer: $(cat $SES/err.$i)"; fi
    # The reader's block: the start of this round's "round i" lines.
    yes "round $i" | head -c "$(stat -c %s $SES/got.$i)" >$SES/want.$i
    if [ ! -s $SES/got.$i ] || ! cmp -s $SES/want.$i $SES/got.$i; then wrong=$((wrong + 1)); [ -n "$first" ] || first="round $i: reader got $(head -c 40 $SES/got.$i)"; fi
  done
  clean left
  if [ $wrong = 0 ]; then
    verdict ok "$n rounds of a reader taking one block and leaving: every writer failed with ENXIO ($told), every reader got its own round's bytes"
  else
    verdict bad "$n rounds: $wrong wrong; $first"
  fi
}
step e2e-sessions-reader-left 0 4 1000 readerleft

killedwriter() {
  rm -rf $SES && mkdir -p $SES
  head -c 4194304 /bin/tbstream >$SES/img
  want=$(sha256sum <$SES/img | cut -d' ' -f1)
  receiver kill
  sender kill || { no_hopids kill; return; }
  n=20
  sessions_run "for i in \$(seq $n); do await held.\$i; yes \"stale \$i\" | dd of=/dev/tbstream0 bs=256k 2>/dev/null & w=\$!; sleep 0.3; kill -9 \$w 2>/dev/null || true; step wkilled.\$i; wait \$w || true; await reader.\$i; dd if=$SES/img of=/dev/tbstream0 bs=256k 2>/dev/null; done" \
    "for i in \$(seq $n); do (exec 3</dev/tbstream0; step held.\$i; exec sleep 600) & h=\$!; await wkilled.\$i; kill -9 \$h; wait \$h || true; dd if=/dev/tbstream0 of=$SES/copy.\$i bs=256k 2>/dev/null & r=\$!; opened \$r; step reader.\$i; wait \$r; done" || { clean kill; return; }
  foreign=0 wrong=0 first=
  for i in $(seq $n); do
    got=$(sha256sum <$SES/copy.$i | cut -d' ' -f1)
    [ "$got" = "$want" ] && continue
    if grep -q stale $SES/copy.$i; then foreign=$((foreign + 1)); else wrong=$((wrong + 1)); fi
    [ -n "$first" ] || first="round $i: $(stat -c %s $SES/copy.$i) bytes"
  done
  clean kill
  if [ $foreign = 0 ] && [ $wrong = 0 ]; then
    verdict ok "$n rounds of a blocked writer killed with its reader and a new session at once: every new reader got its writer's 4 MiB (sha256)"
  else
    verdict bad "$n rounds: $foreign new readers with bytes of the killed session, $wrong with other wrong data; $first"
  fi
  rm -rf $SES
}
step e2e-sessions-killed-writer 83886080 4 3000 killedwriter

# ---- The errno rules that depend on the device being real: O_NONBLOCK open
# without a peer, EAGAIN reads, EBUSY attributes while open.
errnos() {
  on host2 "mkdir $R/0-7.0 $R/0-7.0/s; echo 8 > $R/0-7.0/s/in_hopid; echo 8 > $R/0-7.0/s/out_hopid"
  e1=$(on host2 "vmcheck nbopen /dev/tbstream0" 2>&1)
  on host2 "cd $R/ && rmdir -p 0-7.0/s"
  receiver s
  sender s || { no_hopids s; return; }
  e2=$(on host2 "vmcheck nbread /dev/tbstream0" 2>&1)
  e3=$(on host2 "exec 3<>/dev/tbstream0; echo 64 > $R/0-1.0/s/ring_size" 2>&1)
  clean s
  # vmcheck prints Go's lower-case strerror, the shell the C library's.
  case "$e1|$e2|$e3" in
    "no such device or address|resource temporarily unavailable|"*"Device or resource busy"*)
      verdict ok "O_NONBLOCK open without a peer ENXIO, empty O_NONBLOCK read EAGAIN, attribute while open EBUSY" ;;
    *) verdict bad "'$e1' '$e2' '$e3'" ;;
  esac
}
step e2e-errno 0 12 0 errnos

downs() {
  $TB down >/dev/null 2>&1
  if [ -z "$(ls -A /dev/host1/ /dev/host2/ 2>/dev/null | grep tbstream)" ]; then
    verdict ok "SIGTERM stops both daemons and removes their nodes"
  else
    verdict bad "left $(ls /dev/host1 /dev/host2)"
  fi
}
step e2e-down 0 2 0 downs
