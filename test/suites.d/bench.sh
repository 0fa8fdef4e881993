#!/usr/bin/env bash
# test/suites.d/bench.sh — tbstream's numbers beside the obvious baselines,
# measured in the same run, in interleaved rounds (every measurement once per
# round, TBSTREAM_BENCH_ROUNDS rounds), so that a machine that gets busier
# or quieter affects all of them alike:
#
#   throughput, dd bs=256k of TBSTREAM_BENCH_MIB MiB of zeros:
#     pipe      dd → fifo → dd                        (a kernel pipe)
#     nc        dd | nc -N 127.0.0.1 PORT → nc -l | dd (loopback TCP)
#     fuse      dd → loopdev -fuse file → dd           (one FUSE hop: a pipe behind a FUSE file)
#     tbstream  dd → host1 /dev/tbstreamN ⇒ host2 → dd (two daemons, shared-memory cable, FUSE fallback)
#     tbddsock  the same on a second pair of hosts whose frames stay on the unix socket
#     tbddinproc the same on a third pair: both hosts in one process (up -cable inproc)
#   round trip of 4 KiB messages, p50 (p99 beside it):
#     tcp       TCP_NODELAY ping-pong over loopback    (test/bench/cmd/rtt -tcp)
#     fusehop   write + read back on the loopdev file  (test/bench/cmd/rtt -file),
#               the floor: one hop through the same device server
#     tblat     tbstream bench -lat -sizes 4096        (host1 → host2 → host1)
#     tcp64, tblat64: the same two with 64-byte messages
#     tblatsock the same on the socket-cable hosts
#     tblatinproc the same on the in-process pair
#   tbstream bench -bw, 1 stream and 4 streams at once (aggregate, each stream's share)
#
# then, once, the resident memory (VmRSS) of each daemon: fresh, and with 11
# streams open on both hosts at ring_size 256, and again (fresh daemons) at
# 4096, beside the bytes of the rings.
#
# It never fails on a number: a check fails only when a transfer is wrong
# (a byte count, the bench pattern) or a tool breaks. Every transfer is
# verified: dd's byte counts, rtt's echo comparison, tbstream bench's pattern.
# It says whether the machine looked quiet: before the rounds and after
# them (CPU use in /proc/stat over a second, the busiest processes, the
# load average), and during each round (the CPU time /proc/stat counts
# less what this suite's processes and the daemons used). Needs root and /dev/fuse (skips otherwise). Ends with a
# `tally:` line.
#
# Environment:
#   TBSTREAM_BENCH_MIB     MiB per dd transfer (default 1024)
#   TBSTREAM_BENCH_ROUNDS  rounds (default 3)
#   TBSTREAM_BENCH_TIME    tbstream bench -bw -time (default 2s)
#   TBSTREAM_BENCH_STALL   seconds without progress after which a transfer
#                          counts as hung: it is killed and fails, with both
#                          daemons' stacks (default 30; tbstream bench has
#                          the same as its -stall)
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
mib=${TBSTREAM_BENCH_MIB:-1024}
rounds=${TBSTREAM_BENCH_ROUNDS:-3}
bwtime=${TBSTREAM_BENCH_TIME:-2s}
stall=${TBSTREAM_BENCH_STALL:-30}
count=$((mib * 4)) # 256 KiB blocks
bytes=$((count * 262144))
rss_streams=11

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  skip "bench: needs root and /dev/fuse"
  tally
  exit 0
fi
need nc netcat-openbsd || { tally; exit 0; }
need ss iproute2 || { tally; exit 0; }
need jq jq || { tally; exit 0; }

work=$(mktemp -d -t tbstream-bench.XXXXXX)
run=$work/run
tb=$work/tbstream
loopdev_pid=
cleanup() {
  "$tb" -run "$run" down >/dev/null 2>&1
  [ -z "${run_sock:-}" ] || "$tb" -run "$run_sock" down >/dev/null 2>&1
  [ -z "${run_inproc:-}" ] || "$tb" -run "$run_inproc" down >/dev/null 2>&1
  [ -n "$loopdev_pid" ] && kill "$loopdev_pid" 2>/dev/null && wait "$loopdev_pid" 2>/dev/null
  mountpoint -q "$work/mnt" 2>/dev/null && umount -l "$work/mnt"
  rm -rf "$work"
}
at_exit cleanup

log "building tbstream, loopdev and rtt"
for b in tbstream:./cmd/tbstream loopdev:./test/vm/cmd/loopdev rtt:./test/bench/cmd/rtt; do
  if ! go build -o "$work/${b%%:*}" "${b#*:}" 2>"$work/build.log"; then
    cat "$work/build.log"
    fail "bench: go build ${b#*:}"
    tally
    exit 0
  fi
done

# quiet LABEL: CPU use over one second from /proc/stat, the load average and
# the processes that used more than 5 % of a CPU in that second.
quiet() {
  local a b pids=$work/pids
  snapshot() { # utime+stime per process, and the cpu line
    # after "pid (comm) ", whose comm may hold spaces: utime and stime
    awk '{ sub(/^.*\) /, ""); split(FILENAME, p, "/"); print p[3], $12 + $13 }' /proc/[0-9]*/stat 2>/dev/null
  }
  a=$(head -n1 /proc/stat)
  snapshot >"$pids.0"
  sleep 1
  b=$(head -n1 /proc/stat)
  snapshot >"$pids.1"
  local busy hz
  hz=$(getconf CLK_TCK)
  busy=$(awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y); total = 0
    for (i = 2; i <= n; i++) total += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf "%.0f", (total > 0 ? 100 * (total - idle) / total : 0) }')
  local top
  top=$(awk -v hz="$hz" 'NR == FNR { t[$1] = $2; next }
      ($1 in t) && ($2 - t[$1]) * 100 / hz > 5 { printf "%s %.0f\n", $1, ($2 - t[$1]) * 100 / hz }' "$pids.0" "$pids.1" |
    sort -k2 -nr | head -n 4 | while read -r pid pct; do
      printf '%s (pid %s) %s%%, ' "$(tr -d '\n' </proc/"$pid"/comm 2>/dev/null || echo gone)" "$pid" "$pct"
    done)
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  # The load average is shown, not judged: after the rounds it is ours.
  if [ "$busy" -le 10 ]; then
    echo "machine $1: quiet ($busy % of $(nproc) CPUs busy over 1 s; load average $load)"
  else
    echo "machine $1: NOT quiet ($busy % of $(nproc) CPUs busy over 1 s; busiest: ${top:-none over 5 %}; load average $load)"
  fi
}
quiet_before=$(quiet "before the rounds")
echo "$quiet_before"

# busy_ticks: CPU time (clock ticks, all CPUs) the machine spent busy
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# ours_ticks: CPU time used by this suite: its shell and every process
# below it (a live one's own time; a finished one's is in its parent's
# cutime and cstime), and the two daemons (which tbstream up detaches)
ours_ticks() {
  awk -v root=$$ -v d1="$(cat "$run/host1/pid" 2>/dev/null)" -v d2="$(cat "$run/host2/pid" 2>/dev/null)" \
    -v d3="$(cat "${run_sock:-/nonexistent}/host1/pid" 2>/dev/null)" -v d4="$(cat "${run_sock:-/nonexistent}/host2/pid" 2>/dev/null)" \
    -v d5="$(cat "${run_inproc:-/nonexistent}/host1/pid" 2>/dev/null)" '
    { split(FILENAME, f, "/"); pid = f[3]; sub(/^.*\) /, "")
      parent[pid] = $2; ticks[pid] = $12 + $13 + $14 + $15 }
    END { for (p in ticks) {
        for (a = p; a != "" && a > 1; a = parent[a]) if (a == root || a == d1 || a == d2 || a == d3 || a == d4 || a == d5) { sum += ticks[p]; break }
      }
      print sum + 0 }' /proc/[0-9]*/stat 2>/dev/null
}
# other_load START-BUSY START-OURS START-TIME: the share of all CPUs that
# processes other than this suite's used since then, in percent
other_load() {
  local busy ours t
  busy=$(busy_ticks) ours=$(ours_ticks) t=$(now)
  awk -v b="$((busy - $1))" -v o="$((ours - $2))" -v dt="$(awk -v a="$3" -v b="$t" 'BEGIN { print b - a }')" \
    -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" 'BEGIN { x = (b - o) / (dt * hz * n) * 100; printf "%.0f", (x < 0 ? 0 : x) }'
}

now() { echo "$EPOCHREALTIME"; }
bytes_of() { sed -n 's/^\([0-9]*\) bytes.*/\1/p' "$1" | tail -n1; }
rate() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.1f", b / (t1 - t0) / 1e6 }'; } # rate BYTES T0 T1: MB/s
# record NAME ROUND VALUE
record() { echo "$2 $3" >>"$work/m.$1"; }
bad=() # measurements that failed at least once
broken() { # broken NAME DETAIL
  bad+=("$1")
  echo "FAILED $1 (round $round): $2"
}

log "starting host1 and host2; a loopback FUSE device"
if ! out=$("$tb" -run "$run" up 2>&1); then
  fail "bench: tbstream up: $out"
  tally
  exit 0
fi
mkdir -p "$work/mnt"
# The baselines written in Go run with the Ps tbstream's processes take on
# the FUSE fallback (daemon.MinProcs): a go-fuse server, and a client of
# its files, are as slowed by too few as the daemons and the bench are.
procs=8
GOMAXPROCS=${GOMAXPROCS:-$procs} "$work/loopdev" -fuse "$work/mnt" pipe0 rtt0 2>"$work/loopdev.log" &
loopdev_pid=$!
for _ in $(seq 200); do [ -e "$work/mnt/rtt0" ] && break; sleep 0.05; done
if [ ! -e "$work/mnt/rtt0" ]; then
  fail "bench: loopdev mount did not appear: $(cat "$work/loopdev.log")"
  tally
  exit 0
fi

cfg() { echo "$run/$1/config/thunderbolt/stream"; }
# devpath HOST INDEX: the FUSE fallback's file, or the CUSE node
devpath() {
  if [ -e "$run/$1/dev/tbstream$2" ]; then echo "$run/$1/dev/tbstream$2"; else echo "/dev/$1/tbstream$2"; fi
}
# mkstream NAME [RING]: the documentation's set-up on both hosts; prints
# "host1-device host2-device"
mkstream() {
  local s2 s1 i
  s2=$(cfg host2)/0-1.0/$1 s1=$(cfg host1)/0-503.0/$1
  mkdir -p "$(dirname "$s2")" "$(dirname "$s1")" && mkdir "$s2" || return 1
  [ -z "${2:-}" ] || echo "$2" >"$s2/ring_size" || return 1
  echo -1 >"$s2/in_hopid" && echo -1 >"$s2/out_hopid" && mkdir "$s1" || return 1
  [ -z "${2:-}" ] || echo "$2" >"$s1/ring_size" || return 1
  for i in $(seq 400); do
    [ "$(cat "$s1/out_hopid")" -gt 0 ] && [ "$(cat "$s1/in_hopid")" -gt 0 ] && break
    sleep 0.05
  done
  [ "$(cat "$s1/out_hopid")" -gt 0 ] || return 1
  echo "$(devpath host1 "$(cat "$s1/index")") $(devpath host2 "$(cat "$s2/index")")"
}
# open_on HOST STREAM: how many handles HOST's daemon counts on STREAM (in
# tbstream list, OPEN is the column before the six counters: STATE may
# be several words)
open_on() { "$tb" -run "$run" list 2>/dev/null | awk -v h="$1" -v s="$2" '/^Host / { host = $2 } host == h && $2 == s { print $(NF - 6) }'; }

if ! devs=$(mkstream dd); then
  fail "bench: could not make the dd stream"
  tally
  exit 0
fi
dd1=${devs% *} dd2=${devs#* }

# A second pair of hosts whose cable keeps the frames on the unix socket
# (tbstream up -cable socket), to show what the shared-memory cable of
# the first pair changes, and a third pair in one process (up -cable
# inproc), to show what two processes cost, in the same rounds.
run_shm=$run run_sock=$work/run-socket run_inproc=$work/run-inproc
on_run() { # on_run DIR CMD...: CMD against the hosts under the run root DIR
  local rc
  run=$1
  shift
  "$@"
  rc=$?
  run=$run_shm
  return $rc
}
if ! out=$("$tb" -run "$run_sock" up -cable socket 2>&1) || ! devs=$(on_run "$run_sock" mkstream dd); then
  fail "bench: the socket-cable hosts: $out"
  tally
  exit 0
fi
dds1=${devs% *} dds2=${devs#* }
if ! out=$("$tb" -run "$run_inproc" up -cable inproc 2>&1) || ! devs=$(on_run "$run_inproc" mkstream dd); then
  fail "bench: the in-process hosts: $out"
  tally
  exit 0
fi
ddi1=${devs% *} ddi2=${devs#* }

# ---- one measurement each; each records its number or says why not ----

# guard NAME WATCHED PIDS...: a watchdog, started in the background for a
# transfer. While WATCHED runs, it follows the bytes WATCHED has read
# (rchar in /proc/PID/io); when they stop moving for $stall s, the
# transfer hangs: it writes tbstream list and both daemons' goroutine
# stacks to $work/NAME.stalled and kills PIDS (WATCHED included), so that
# the transfer fails, with that evidence, instead of blocking the suite.
guard() {
  local name=$1 watched=$2 last=-1 still=0 now
  shift
  while kill -0 "$watched" 2>/dev/null; do
    now=$(awk '/^rchar:/ { print $2 }' "/proc/$watched/io" 2>/dev/null)
    if [ "${now:-0}" = "$last" ]; then
      still=$((still + 1))
      if [ "$still" -ge "$stall" ]; then
        { echo "no progress for $stall s after $now bytes"; "$tb" -run "$run" list; "$tb" -run "$run" stacks; } >"$work/$name.stalled" 2>&1
        kill "$@" 2>/dev/null
        return
      fi
    else
      last=${now:-0} still=0
    fi
    sleep 1
  done
}
# guarded NAME: after a transfer, kills its guard and tells whether it
# found the transfer hung (then broken has been said)
guarded() {
  kill "$guard" 2>/dev/null
  wait "$guard" 2>/dev/null
  if [ -e "$work/$1.stalled" ]; then
    broken "$1" "hung: $(head -n 1 "$work/$1.stalled"); the streams and the daemons' stacks follow"
    sed 's/^/    /' "$work/$1.stalled"
    rm -f "$work/$1.stalled"
    return 1
  fi
}

m_pipe() {
  local t0 t1 got reader
  # The reader in the background, through a fifo, so that it can be
  # watched like the others.
  rm -f "$work/fifo" && mkfifo "$work/fifo"
  dd if="$work/fifo" of=/dev/null bs=256k 2>"$work/pipe.r" &
  reader=$!
  t0=$(now)
  dd if=/dev/zero of="$work/fifo" bs=256k count=$count status=none &
  local writer=$!
  guard pipe "$reader" "$reader" "$writer" &
  guard=$!
  wait "$writer"
  wait "$reader"
  t1=$(now)
  guarded pipe || return
  got=$(bytes_of "$work/pipe.r")
  [ "$got" = "$bytes" ] || { broken pipe "moved ${got:-0} of $bytes bytes"; return; }
  record pipe "$round" "$(rate "$bytes" "$t0" "$t1")"
}

# timed_dd NAME READER-DEVICE WRITER-DEVICE [STREAM]: dd into a device
# whose reader was started first (and, for a tbstream STREAM, holds it
# open: a writer alone would give up on its CLOSE frame); the time runs
# from the writer's start to the reader's end.
timed_dd() {
  local name=$1 from=$2 to=$3 t0 t1 got rrc wrc reader writer
  dd if="$from" of=/dev/null bs=256k 2>"$work/$name.r" &
  reader=$!
  if [ -n "${4:-}" ]; then
    for _ in $(seq 200); do [ "$(open_on host2 "$4")" = 1 ] && break; sleep 0.02; done
  fi
  t0=$(now)
  dd if=/dev/zero of="$to" bs=256k count=$count status=none 2>"$work/$name.w" &
  writer=$!
  guard "$name" "$reader" "$reader" "$writer" &
  guard=$!
  wait "$writer"
  wrc=$?
  wait "$reader"
  rrc=$?
  t1=$(now)
  guarded "$name" || return
  got=$(bytes_of "$work/$name.r")
  if [ "$wrc" != 0 ] || [ "$rrc" != 0 ] || [ "$got" != "$bytes" ]; then
    broken "$name" "read ${got:-0} of $bytes bytes (writer rc $wrc: $(head -c 200 "$work/$name.w"), reader rc $rrc)"
    return
  fi
  record "$name" "$round" "$(rate "$bytes" "$t0" "$t1")"
}
m_fuse() { timed_dd fuse "$work/mnt/pipe0" "$work/mnt/pipe0"; }
m_tbdd() { timed_dd tbdd "$dd2" "$dd1" dd; }
m_tbddsock() { on_run "$run_sock" timed_dd tbddsock "$dds2" "$dds1" dd; }
m_tbddinproc() { on_run "$run_inproc" timed_dd tbddinproc "$ddi2" "$ddi1" dd; }

m_nc() {
  local port t0 t1 got reader writer
  port=$((20000 + RANDOM % 20000))
  nc -l 127.0.0.1 "$port" | dd of=/dev/null bs=256k 2>"$work/nc.r" &
  reader=$! # the last of the pipeline: dd
  for _ in $(seq 100); do ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port " && break; sleep 0.05; done
  t0=$(now)
  dd if=/dev/zero bs=256k count=$count status=none | nc -N 127.0.0.1 "$port" &
  writer=$!
  guard nc "$reader" "$reader" "$writer" &
  guard=$!
  wait "$writer"
  wait "$reader"
  t1=$(now)
  guarded nc || return
  got=$(bytes_of "$work/nc.r")
  [ "$got" = "$bytes" ] || { broken nc "moved ${got:-0} of $bytes bytes"; return; }
  record nc "$round" "$(rate "$bytes" "$t0" "$t1")"
}

# rtt NAME ARGS...: test/bench/cmd/rtt's p50 (and p99 as NAME99), 4 KiB
# messages unless ARGS say -size
rtt() {
  local name=$1 out
  shift
  GOMAXPROCS=${GOMAXPROCS:-$procs} "$work/rtt" -size 4096 "$@" -rounds 2000 -warmup 200 >"$work/$name.out" 2>&1 &
  local pid=$!
  guard "$name" "$pid" "$pid" &
  guard=$!
  wait "$pid"
  local rc=$?
  guarded "$name" || return
  out=$(cat "$work/$name.out")
  if [ "$rc" != 0 ]; then
    broken "$name" "$out"
    return
  fi
  record "$name" "$round" "$(echo "$out" | sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p')"
  record "${name}99" "$round" "$(echo "$out" | sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p')"
}
m_tcp() { rtt tcp -tcp; }
m_tcp64() { rtt tcp64 -tcp -size 64; }
m_fusehop() { rtt fusehop -file "$work/mnt/rtt0"; }

# bench NAME ARGS...: tbstream bench -json into $work/NAME.json
tbbench() {
  local name=$1
  shift
  if ! "$tb" -run "$run" bench -json -stall "${stall}s" "$@" >"$work/$name.json" 2>"$work/$name.err"; then
    broken "$name" "$(jq -r '.error // empty' "$work/$name.json" 2>/dev/null) $(tail -n 3 "$work/$name.err")"
    return 1
  fi
}
m_tblat() {
  tbbench tblat -lat -sizes 4096 -rounds 2000 || return
  record tblat "$round" "$(jq '.latency.sizes[0].p50_us' "$work/tblat.json")"
  record tblat99 "$round" "$(jq '.latency.sizes[0].p99_us' "$work/tblat.json")"
}
m_tblat64() {
  tbbench tblat64 -lat -sizes 64 -rounds 2000 || return
  record tblat64 "$round" "$(jq '.latency.sizes[0].p50_us' "$work/tblat64.json")"
}
m_tblatsock() {
  on_run "$run_sock" tbbench tblatsock -lat -sizes 4096 -rounds 2000 || return
  record tblatsock "$round" "$(jq '.latency.sizes[0].p50_us' "$work/tblatsock.json")"
}
m_tblatinproc() {
  on_run "$run_inproc" tbbench tblatinproc -lat -sizes 4096 -rounds 2000 || return
  record tblatinproc "$round" "$(jq '.latency.sizes[0].p50_us' "$work/tblatinproc.json")"
  record tblatinproc99 "$round" "$(jq '.latency.sizes[0].p99_us' "$work/tblatinproc.json")"
}
m_bw1() {
  tbbench bw1 -bw -streams 1 -time "$bwtime" || return
  record bw1 "$round" "$(jq '.bandwidth.mb_per_s' "$work/bw1.json")"
}
m_bw4() {
  tbbench bw4 -bw -streams 4 -time "$bwtime" || return
  record bw4 "$round" "$(jq '.bandwidth.mb_per_s' "$work/bw4.json")"
  echo "$round $(jq -r '.bandwidth.mb_per_s as $all | [.bandwidth.streams[].directions[0].mb_per_s / $all * 100 | floor | tostring + "%"] | join(" ")' "$work/bw4.json")" >>"$work/shares"
}

measures=(pipe nc fuse tbdd tbddsock tbddinproc tcp tcp64 fusehop tblat tblat64 tblatsock tblatinproc bw1 bw4)
t_start=$(date +%s)
loads=()
for round in $(seq "$rounds"); do
  log "round $round of $rounds: ${measures[*]}"
  b0=$(busy_ticks) o0=$(ours_ticks) t0=$(now)
  for m in "${measures[@]}"; do "m_$m"; done
  loads+=("$(other_load "$b0" "$o0" "$t0")")
done
t_rounds=$(($(date +%s) - t_start))
quiet_after=$(quiet "after the rounds")

# ---- memory ----

# rss_of HOST: the daemon's VmRSS in KiB
rss_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$(cat "$run/$1/pid")/status"; }
# rss_with RING: restarts the hosts, then measures each daemon fresh and
# with $rss_streams streams of ring_size RING open on both hosts; sets
# rss_fresh_HOST and rss_open_HOST. The streams are removed while still
# open (the daemon releases them at the last close).
rss_with() {
  local ring=$1 i devs h1=() h2=() holders=()
  "$tb" -run "$run" down && "$tb" -run "$run" up || { broken rss "restart the hosts"; return 1; }
  for h in host1 host2; do printf -v "rss_fresh_$h" %s "$(rss_of $h)"; done
  for i in $(seq 0 $((rss_streams - 1))); do
    devs=$(mkstream "rss$i" "$ring") || { broken rss "make stream rss$i at ring_size $ring"; return 1; }
    h1+=("${devs% *}") h2+=("${devs#* }")
  done
  # A shell per host holds every device open, then waits.
  local hold='for p; do exec {fd}<>"$p" || exit 1; done; exec sleep 600'
  bash -c "$hold" _ "${h1[@]}" &
  holders+=($!)
  bash -c "$hold" _ "${h2[@]}" &
  holders+=($!)
  for _ in $(seq 200); do
    [ "$(open_on host1 rss$((rss_streams - 1)))" = 1 ] && [ "$(open_on host2 rss$((rss_streams - 1)))" = 1 ] && break
    sleep 0.05
  done
  local opened
  opened=$("$tb" -run "$run" list | awk '$2 ~ /^rss/ && $(NF - 6) == 1' | wc -l)
  for h in host1 host2; do printf -v "rss_open_$h" %s "$(rss_of $h)"; done
  for i in $(seq 0 $((rss_streams - 1))); do rmdir "$(cfg host1)/0-503.0/rss$i" "$(cfg host2)/0-1.0/rss$i"; done
  kill "${holders[@]}" 2>/dev/null
  wait "${holders[@]}" 2>/dev/null
  [ "$opened" = $((2 * rss_streams)) ] || { broken rss "$opened of $((2 * rss_streams)) devices open at ring_size $ring"; return 1; }
}

round=rss
rss_after_rounds_host1=$(rss_of host1) rss_after_rounds_host2=$(rss_of host2)
log "memory: $rss_streams streams open on both hosts, ring_size 256, then 4096 (fresh daemons each)"
rss_ok=1
if rss_with 256; then
  r256_fresh1=$rss_fresh_host1 r256_fresh2=$rss_fresh_host2 r256_open1=$rss_open_host1 r256_open2=$rss_open_host2
else rss_ok=0; fi
if [ $rss_ok = 1 ] && rss_with 4096; then
  r4k_fresh1=$rss_fresh_host1 r4k_fresh2=$rss_fresh_host2 r4k_open1=$rss_open_host1 r4k_open2=$rss_open_host2
else rss_ok=0; fi

# ---- the table ----

# stat NAME: "median min max" over the rounds ("-" when none)
stat() {
  [ -s "$work/m.$1" ] || { echo "- - -"; return; }
  awk '{ print $2 }' "$work/m.$1" | sort -g | awk '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}
# ratio A B: A/B per round, then "median min max"
ratio() {
  [ -s "$work/m.$1" ] && [ -s "$work/m.$2" ] || { echo "- - -"; return; }
  awk 'NR == FNR { b[$1] = $2; next } ($1 in b) && b[$1] > 0 { print $2 / b[$1] }' "$work/m.$2" "$work/m.$1" | sort -g |
    awk '{ v[NR] = $1 } END { if (!NR) { print "- - -"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.3f %.3f %.3f\n", m, v[1], v[NR] }'
}
row() { # row LABEL UNIT NAME
  read -r med lo hi < <(stat "$3")
  printf '  %-58s %9s %9s %9s  %s\n' "$1" "$med" "$lo" "$hi" "$2"
}
rrow() { # rrow LABEL A B
  read -r med lo hi < <(ratio "$2" "$3")
  printf '  %-58s %9s %9s %9s\n' "$1" "$med" "$lo" "$hi"
}
echo
echo "== bench: $rounds interleaved rounds in $t_rounds s; dd of $mib MiB, bs=256k; median, min, max over the rounds"
echo "$quiet_before"
echo "$quiet_after"
noisy=0
for l in "${loads[@]}"; do [ "$l" -gt 10 ] && noisy=1; done
if [ $noisy = 0 ]; then
  echo "during the rounds: quiet: other processes used ${loads[*]} % of the CPUs (round by round)"
else
  echo "during the rounds: NOT quiet: other processes used ${loads[*]} % of the CPUs (round by round)"
fi
printf '  %-58s %9s %9s %9s\n' "" median min max
row "kernel pipe: dd -> fifo -> dd" MB/s pipe
row "loopback TCP: dd | nc -N -> nc -l | dd" MB/s nc
row "one FUSE hop: dd -> loopdev -fuse pipe file -> dd" MB/s fuse
row "tbstream: dd -> host1 tbstreamN => host2 tbstreamN -> dd" MB/s tbdd
row "  the same, frames on the unix socket (up -cable socket)" MB/s tbddsock
row "  the same, both hosts in one process (up -cable inproc)" MB/s tbddinproc
row "RTT 4 KiB p50, loopback TCP, TCP_NODELAY" µs tcp
row "RTT 4 KiB p99, loopback TCP" µs tcp99
row "RTT 4 KiB p50, FUSE hop: write + read back, loopdev file" µs fusehop
row "RTT 4 KiB p99, FUSE hop" µs fusehop99
row "RTT 4 KiB p50, tbstream bench -lat (host1, host2, back)" µs tblat
row "RTT 4 KiB p99, tbstream bench -lat" µs tblat99
row "RTT 64 B p50, loopback TCP, TCP_NODELAY" µs tcp64
row "RTT 64 B p50, tbstream bench -lat" µs tblat64
row "RTT 4 KiB p50, tbstream, cable frames on the unix socket" µs tblatsock
row "RTT 4 KiB p50, tbstream, both hosts in one process" µs tblatinproc
row "RTT 4 KiB p99, tbstream, both hosts in one process" µs tblatinproc99
row "tbstream bench -bw, 1 stream ($bwtime)" MB/s bw1
row "tbstream bench -bw, 4 streams at once, aggregate" MB/s bw4
[ -s "$work/shares" ] && while read -r r shares; do
  printf '  %-58s %s\n' "  4 streams, each stream's share of the aggregate, round $r" "$shares"
done <"$work/shares"
echo "ratios, per round, then median, min, max:"
rrow "tbstream dd / nc" tbdd nc
rrow "tbstream dd / FUSE hop dd" tbdd fuse
rrow "tbstream dd, shared-memory cable / socket cable" tbdd tbddsock
rrow "tbstream RTT p50, shared-memory cable / socket cable" tblat tblatsock
rrow "tbstream dd, in-process pair / nc" tbddinproc nc
rrow "tbstream dd, in-process pair / FUSE hop dd" tbddinproc fuse
rrow "tbstream RTT p50, in-process pair / FUSE hop RTT p50" tblatinproc fusehop
rrow "tbstream RTT p50, in-process pair / TCP RTT p50" tblatinproc tcp
rrow "FUSE hop dd / pipe" fuse pipe
rrow "tbstream RTT p50 / FUSE hop RTT p50" tblat fusehop
rrow "tbstream RTT p50 / TCP RTT p50" tblat tcp
rrow "tbstream RTT 64 B p50 / TCP RTT 64 B p50" tblat64 tcp64
rrow "FUSE hop RTT p50 / TCP RTT p50" fusehop tcp
rrow "4 streams aggregate / 1 stream" bw4 bw1
if [ $rss_ok = 1 ]; then
  rings256=$((rss_streams * 2 * 256 * 4096 / 1024)) rings4k=$((rss_streams * 2 * 4096 * 4096 / 1024))
  echo "memory (VmRSS, KiB), $rss_streams streams held open on both hosts; rings: $rss_streams × (TX + RX) × ring_size × 4 KiB per host:"
  printf '  %-8s %12s %10s %12s %10s %12s %12s %12s\n' daemon after-rounds fresh "open@256" fresh "open@4096" "Δ256/rings" "Δ4096/rings"
  for h in 1 2; do
    f256=r256_fresh$h o256=r256_open$h f4k=r4k_fresh$h o4k=r4k_open$h ar=rss_after_rounds_host$h
    printf '  %-8s %12s %10s %12s %10s %12s %12s %12s\n' "host$h" "${!ar}" "${!f256}" "${!o256}" "${!f4k}" "${!o4k}" \
      "$(awk -v d=$((${!o256} - ${!f256})) -v r=$rings256 'BEGIN { printf "%.2f", d / r }')" \
      "$(awk -v d=$((${!o4k} - ${!f4k})) -v r=$rings4k 'BEGIN { printf "%.2f", d / r }')"
  done
  echo "  rings per host: $rings256 KiB at ring_size 256, $rings4k KiB at 4096; open@4096 / open@256: host1 $(awk -v a="$r4k_open1" -v b="$r256_open1" 'BEGIN { printf "%.2f", a / b }'), host2 $(awk -v a="$r4k_open2" -v b="$r256_open2" 'BEGIN { printf "%.2f", a / b }')"
fi
echo

# ---- results: one check per measurement ----
for m in "${measures[@]}" rss; do
  failed=0
  for b in "${bad[@]}"; do [ "$b" = "$m" ] && failed=1; done
  if [ $failed = 1 ]; then
    fail "bench/$m: a transfer failed or was wrong (see FAILED above)"
  elif [ "$m" = rss ]; then
    [ $rss_ok = 1 ] && pass "bench/rss: $rss_streams streams open at ring_size 256 and 4096"
  else
    n=$(wc -l <"$work/m.$m" 2>/dev/null || echo 0)
    pass "bench/$m: $n of $rounds rounds, verified"
  fi
done
tally
