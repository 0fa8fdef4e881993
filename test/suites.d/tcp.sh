#!/usr/bin/env bash
# Two machines over TCP, for real on one: two network namespaces joined by
# a veth pair (10.77.0.1/24 ↔ 10.77.0.2/24) stand for the machines, each
# with its own tbstreamd (hostA listens, hostB dials) and its own copy of
# the cable key. The commands are the README's "Two machines over TCP",
# with the run root and /etc/tbstream moved into a temporary directory and
# each daemon started in its namespace (nsenter --net, which, unlike
# `ip netns exec`, keeps the mount namespace: the daemons' FUSE mounts
# must be visible to `tbstream shell`). Then the kernel documentation's
# workflow in `tbstream shell`: a 64 MiB backup with dd (sha256 equal), a
# tarball through gzip (diff -r clean); a daemon with the wrong key is
# refused, with no XDomain on either side, while the right one still gets
# in; a listener beyond loopback without a key is refused in one line.
# Everything is stopped with SIGTERM and removed, on failure too. Ends with
# a `tally:` line.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

if [ "$(id -u)" != 0 ]; then
  skip "tcp: needs root (network namespaces, FUSE mounts, mount namespaces)"
  tally
  exit 0
fi
ok=1
need ip iproute2 || ok=0
need nsenter util-linux || ok=0
need unshare util-linux || ok=0
need gunzip gzip || ok=0
need timeout coreutils || ok=0
if [ $ok = 0 ]; then
  tally
  exit 0
fi

tmp=$(mktemp -d -t tbstream-tcp.XXXXXX)
bin=$tmp/bin
run=$tmp/run           # the run root, /run/tbstream on a machine
etcA=$tmp/A/etc        # hostA's /etc/tbstream
etcB=$tmp/B/etc        # hostB's
nsA=tbstream-tcp-$$-A  # the machines: unique per run
nsB=tbstream-tcp-$$-B
port=7420
declare -A daemon_pid=() # host -> pid of its tbstreamd

# in_ns NS CMD...: CMD in network namespace NS, in this mount namespace.
in_ns() {
  local ns=$1
  shift
  nsenter --net="/run/netns/$ns" "$@"
}

# start_daemon HOST NS ARGS...: HOST's tbstreamd in NS, logging to
# $tmp/HOST.log, as the README starts it (-name, -run-dir, then ARGS).
start_daemon() {
  local host=$1 ns=$2
  shift 2
  # A simple command, not a function, in the background: $! is then
  # nsenter's PID, which execs tbstreamd (no --fork): the daemon's own.
  nsenter --net="/run/netns/$ns" "$bin/tbstreamd" -name "$host" -run-dir "$run/$host" "$@" >"$tmp/$host.log" 2>&1 &
  daemon_pid[$host]=$!
}

# stop_daemon HOST: SIGTERM, then waits (10 s, then SIGKILL); prints
# nothing, returns the daemon's exit status.
stop_daemon() {
  local host=$1 pid=${daemon_pid[$1]:-} i rc
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  unset "daemon_pid[$host]"
  return $rc
}

# mounts_under DIR: mount points below DIR, deepest first.
mounts_under() {
  awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

cleanup() {
  local h m f pid i
  for h in "${!daemon_pid[@]}"; do stop_daemon "$h"; done
  # A daemon this suite started that it lost track of (its pid file names
  # it, and its command line names its run directory): SIGTERM too.
  for f in "$run"/*/pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-run-dir $(dirname "$f") "; then
      kill -TERM "$pid"
      for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
  done
  # What a killed daemon left behind.
  for m in $(mounts_under "$tmp"); do umount -l "$m" 2>/dev/null; done
  ip netns del "$nsA" 2>/dev/null
  ip netns del "$nsB" 2>/dev/null
  if [ -z "$(mounts_under "$tmp")" ]; then
    rm -rf --one-file-system "$tmp"
  fi
}
at_exit cleanup

# shell HOST SCRIPT: SCRIPT in HOST's view (its configfs at
# /sys/kernel/config, its devices at /dev/tbstreamN), at most 60 s.
shell() {
  timeout -k 5 60 "$bin/tbstream" -run "$run" shell "$1" bash -ec "$2"
}

# wait_for WHAT TRIES CMD...: runs CMD every 0.2 s until it succeeds, at
# most TRIES times.
wait_for() {
  local tries=$2 i
  shift 2
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# has_stream_peer HOST XD: HOST sees XDomain XD with the stream service,
# as a program for the kernel driver would look for it.
has_stream_peer() {
  shell "$1" "grep -qx stream /sys/bus/thunderbolt/devices/$2.*/key"
}

# xdomains HOST: the XDomains (d-route, other than the host's own 0-0) in
# HOST's /sys/bus/thunderbolt/devices.
xdomains() {
  shell "$1" 'cd /sys/bus/thunderbolt/devices && for d in [0-9]*-*; do case $d in 0-0|*.*) ;; *) [ -e "$d" ] && echo "$d";; esac; done; :' ||
    echo "(tbstream shell $1 failed)"
}

# no_xdomains HOST: HOST sees no XDomain.
no_xdomains() {
  [ -z "$(xdomains "$1")" ]
}

log_tail() {
  echo "--- $1 log, last lines"
  grep -v 'level=DEBUG' "$tmp/$1.log" 2>/dev/null | tail -n 15
}

# --- the machines ----------------------------------------------------------

# ip netns exec enters a mount namespace of its own (to remount /sys):
# mounts made in it would be hidden from everyone else. nsenter --net
# changes the network namespace only.
ip netns add "$nsA" && ip netns add "$nsB" || { fail "tcp/netns: cannot add network namespaces"; tally; exit 0; }
self_mnt=$(readlink /proc/self/ns/mnt)
exec_mnt=$(ip netns exec "$nsA" readlink /proc/self/ns/mnt)
nsenter_mnt=$(in_ns "$nsA" readlink /proc/self/ns/mnt)
if [ "$exec_mnt" != "$self_mnt" ] && [ "$nsenter_mnt" = "$self_mnt" ]; then
  pass "tcp/nsenter: ip netns exec runs in another mount namespace ($exec_mnt, ours $self_mnt), nsenter --net in ours: the daemons start with nsenter"
else
  fail "tcp/nsenter: mount namespaces: ours $self_mnt, ip netns exec $exec_mnt, nsenter --net $nsenter_mnt"
fi
vA=tbtA$$ vB=tbtB$$ # interface names: at most 15 characters
if ip link add "$vA" type veth peer name "$vB" &&
  ip link set "$vA" netns "$nsA" && ip link set "$vB" netns "$nsB" &&
  ip -n "$nsA" addr add 10.77.0.1/24 dev "$vA" && ip -n "$nsB" addr add 10.77.0.2/24 dev "$vB" &&
  ip -n "$nsA" link set lo up && ip -n "$nsB" link set lo up &&
  ip -n "$nsA" link set "$vA" up && ip -n "$nsB" link set "$vB" up; then
  pass "tcp/veth: $nsA 10.77.0.1/24 ↔ $nsB 10.77.0.2/24"
else
  fail "tcp/veth: cannot set up the veth pair"
  tally
  exit 0
fi

log "building tbstream and tbstreamd"
if ! CGO_ENABLED=0 go build -o "$bin/tbstream" ./cmd/tbstream || ! CGO_ENABLED=0 go build -o "$bin/tbstreamd" ./cmd/tbstreamd; then
  fail "tcp/build: go build ./cmd/tbstream ./cmd/tbstreamd"
  tally
  exit 0
fi

# The key, made on hostA and copied to hostB (scp -p keeps mode 0600).
mkdir -p "$etcA" "$etcB" "$tmp/A" "$tmp/B"
(umask 077 && head -c 32 /dev/urandom | base64 >"$etcA/cable.key")
cp -p "$etcA/cable.key" "$etcB/cable.key"
(umask 077 && head -c 32 /dev/urandom | base64 >"$tmp/wrong.key")

# --- a listener beyond loopback without a key ------------------------------

out=$(in_ns "$nsA" timeout -k 5 10 "$bin/tbstreamd" -name hostX -run-dir "$run/hostX" -listen "tcp:10.77.0.1:$port" 2>&1)
rc=$?
# One line says why (any other may only point to -h).
why=$(printf '%s\n' "$out" | grep -- 'needs a cable key.*-cable-key')
other=$(printf '%s\n' "$out" | grep -v -- 'needs a cable key' | grep -vx "run '.*-h' for usage")
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$(printf '%s' "$why" | grep -c .)" = 1 ] && [ -z "$other" ] && [ ! -e "$run/hostX" ]; then
  pass "tcp/no-key: refused (exit $rc) in one line: $why"
else
  fail "tcp/no-key: want one line naming -cable-key and a non-zero exit, got exit $rc: $(printf '%s' "$out" | tr '\n' ' ')"
fi

# --- hostA listens, hostB dials ----------------------------------------------

log "hostA: tbstreamd -listen tcp:10.77.0.1:$port; hostB: tbstreamd -connect tcp:10.77.0.1:$port"
start_daemon hostA "$nsA" -listen "tcp:10.77.0.1:$port" -cable-key "$etcA/cable.key" -adapter 1 -peer-route 1
start_daemon hostB "$nsB" -connect "tcp:10.77.0.1:$port" -cable-key "$etcB/cable.key" -adapter 3 -peer-route 503
if wait_for "hostA sees hostB" 100 has_stream_peer hostA 0-1 && wait_for "hostB sees hostA" 100 has_stream_peer hostB 0-503; then
  pass "tcp/plug: over 10.77.0.1:$port hostA sees hostB as 0-1, hostB sees hostA as 0-503, each with its stream service (hostA logged: $(grep -m1 -o 'peer=0-1 .*' "$tmp/hostA.log"))"
  plugged=1
else
  fail "tcp/plug: the hosts did not see each other in 20 s"
  log_tail hostA
  log_tail hostB
  plugged=0
fi

stream=/sys/kernel/config/thunderbolt/stream

# receiver NAME: hostA's part of the documentation for stream NAME.
receiver() {
  shell hostA "mkdir $stream/0-1.0
mkdir $stream/0-1.0/$1
echo -1 > $stream/0-1.0/$1/in_hopid
echo -1 > $stream/0-1.0/$1/out_hopid"
}

# sender NAME: hostB's, as a script; the HopIDs come from hostA's
# announcement, which takes a moment to arrive.
sender() {
  printf '%s\n' "mkdir $stream/0-503.0" "mkdir $stream/0-503.0/$1" \
    "for i in \$(seq 200); do [ \"\$(cat $stream/0-503.0/$1/out_hopid)\" -gt 0 ] && break; sleep 0.05; done" \
    "[ \"\$(cat $stream/0-503.0/$1/out_hopid)\" -gt 0 ] || { echo '$1: no HopIDs from hostA after 10 s' >&2; exit 1; }"
}

# remove NAME: both hosts' stream NAME and its group.
remove() {
  shell hostB "cd $stream/ && rmdir -p 0-503.0/$1" >/dev/null 2>&1
  shell hostA "cd $stream/ && rmdir -p 0-1.0/$1" >/dev/null 2>&1
}

backup() {
  local recv send_rc recv_rc sumA sumB
  dd if=/dev/urandom of="$tmp/B/nvme0n1" bs=1M count=64 status=none
  receiver backup
  shell hostA "dd if=/dev/tbstream0 of=$tmp/A/hostB.nvme0n1.backup bs=256k" >"$tmp/recv.out" 2>&1 &
  recv=$!
  shell hostB "$(sender backup)
dd if=$tmp/B/nvme0n1 of=/dev/tbstream0 bs=256k" >"$tmp/send.out" 2>&1
  send_rc=$?
  wait "$recv"
  recv_rc=$?
  sumB=$(sha256sum <"$tmp/B/nvme0n1" | cut -d' ' -f1)
  sumA=$(sha256sum <"$tmp/A/hostB.nvme0n1.backup" 2>/dev/null | cut -d' ' -f1)
  if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && [ "$sumA" = "$sumB" ]; then
    pass "tcp/backup: 64 MiB hostB → hostA with dd bs=256k, sha256 ${sumA:0:16}… equal on both hosts ($(tail -n 1 "$tmp/send.out"))"
  else
    fail "tcp/backup: sender exit $send_rc, receiver exit $recv_rc, sha256 hostB $sumB, hostA ${sumA:-none}"
    cat "$tmp/send.out" "$tmp/recv.out"
    log_tail hostA
    log_tail hostB
  fi
  remove backup
}

tarball() {
  local d f recv send_rc recv_rc files
  mkdir -p "$tmp/B/mydir/empty" "$tmp/A/recv"
  for d in $(seq 10); do
    mkdir -p "$tmp/B/mydir/d$d/sub"
    for f in $(seq 30); do head -c $((RANDOM * 2 % 50000)) /dev/urandom >"$tmp/B/mydir/d$d/sub/f$f"; done
    : >"$tmp/B/mydir/d$d/zero"
    ln -s sub/f1 "$tmp/B/mydir/d$d/link"
  done
  receiver data
  shell hostA "cd $tmp/A/recv && gunzip < /dev/tbstream0 | tar xf -" >"$tmp/recv.out" 2>&1 &
  recv=$!
  shell hostB "$(sender data)
cd $tmp/B && tar cf - mydir | gzip > /dev/tbstream0" >"$tmp/send.out" 2>&1
  send_rc=$?
  wait "$recv"
  recv_rc=$?
  files=$(find "$tmp/B/mydir" -type f | wc -l)
  if [ "$send_rc" = 0 ] && [ "$recv_rc" = 0 ] && diff -r --no-dereference "$tmp/B/mydir" "$tmp/A/recv/mydir" >"$tmp/diff.out" 2>&1; then
    pass "tcp/tar-gzip: tar cf - mydir | gzip > /dev/tbstream0 on hostB, gunzip < /dev/tbstream0 | tar xf - on hostA: $files files, diff -r clean"
  else
    fail "tcp/tar-gzip: sender exit $send_rc, receiver exit $recv_rc, diff: $(head -n 5 "$tmp/diff.out" | tr '\n' ' ')"
    cat "$tmp/send.out" "$tmp/recv.out"
  fi
  remove data
}

if [ "$plugged" = 1 ]; then
  backup
  tarball
fi

# --- the wrong key -------------------------------------------------------------

# hostB goes; a host with another key dials hostA from hostB's machine.
stop_daemon hostB
rc=$?
if [ "$rc" = 0 ] && [ -z "$(mounts_under "$run/hostB")" ] && wait_for "hostA sees no peer" 50 no_xdomains hostA; then
  pass "tcp/unplug: hostB stopped by SIGTERM (exit 0, nothing mounted), hostA sees no peer"
else
  fail "tcp/unplug: hostB exit $rc, mounts left: $(mounts_under "$run/hostB" | tr '\n' ' '), hostA's XDomains: $(xdomains hostA | tr '\n' ' ')"
fi
start_daemon hostC "$nsB" -connect "tcp:10.77.0.1:$port" -cable-key "$tmp/wrong.key" -adapter 3 -peer-route 503
if wait_for "hostC refused" 75 grep -q 'cable peer refused' "$tmp/hostC.log"; then
  pass "tcp/wrong-key: refused: $(grep -m1 -o 'err=.*cable peer refused.*' "$tmp/hostC.log")"
else
  fail "tcp/wrong-key: no refusal in hostC's log in 15 s"
  log_tail hostC
fi
if grep -q 'cable connection refused.*from=10.77.0.2:' "$tmp/hostA.log"; then
  pass "tcp/wrong-key-listener: hostA logged the refusal: $(grep -m1 'cable connection refused' "$tmp/hostA.log" | grep -o 'msg=.*')"
else
  fail "tcp/wrong-key-listener: no refusal in hostA's log"
  log_tail hostA
fi
seenA=$(xdomains hostA)
seenC=$(xdomains hostC)
if [ -z "$seenA" ] && [ -z "$seenC" ] && grep -q 'tbstreamd ready' "$tmp/hostC.log"; then
  pass "tcp/wrong-key-no-xdomain: neither hostA nor hostC sees an XDomain"
else
  fail "tcp/wrong-key-no-xdomain: hostA sees '${seenA}', hostC sees '${seenC}'"
fi
# The right key still gets in while the stranger keeps dialling.
start_daemon hostB "$nsB" -connect "tcp:10.77.0.1:$port" -cable-key "$etcB/cable.key" -adapter 3 -peer-route 503
if wait_for "hostA sees hostB again" 100 has_stream_peer hostA 0-1 && [ -z "$(xdomains hostC)" ]; then
  pass "tcp/replug: hostB plugged in again beside the refused hostC; hostC still sees nothing"
else
  fail "tcp/replug: hostA does not see hostB again within 20 s (hostC sees '$(xdomains hostC)')"
  log_tail hostA
  log_tail hostB
fi

# --- stop ------------------------------------------------------------------
codes=
for h in hostC hostB hostA; do
  stop_daemon "$h"
  codes="$codes $h:$?"
done
left=$(mounts_under "$run")
if [ "$codes" = " hostC:0 hostB:0 hostA:0" ] && [ -z "$left" ] && [ ! -e "$run/hostA/status.sock" ]; then
  pass "tcp/stop: every daemon exited 0 at SIGTERM, nothing mounted under the run root"
else
  fail "tcp/stop: exit codes$codes, mounts left: $(echo "$left" | tr '\n' ' ')"
fi
cleanup
if ! ip netns list | grep -q "tbstream-tcp-$$-" && [ ! -e "$tmp" ]; then
  pass "tcp/cleanup: network namespaces and the temporary directory removed"
else
  fail "tcp/cleanup: left: $(ip netns list | grep "tbstream-tcp-$$-") $(ls -d "$tmp" 2>/dev/null)"
fi
tally
