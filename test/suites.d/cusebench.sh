#!/usr/bin/env bash
# test/suites.d/cusebench.sh — throughput of the FUSE fallback on the host.
#
#   dd if=/dev/zero ──► <mnt>/tbstream0 (loopdev -fuse: loopback pipe) ──► dd of=/dev/null
#   dd if=/dev/zero ──► kernel pipe ──────────────────────────────────────► dd of=/dev/null
#
# Both run in this script on the same machine, one after the other; the
# result is the ratio of the two rates (no threshold: the machine is shared
# and noisy). One test: it fails when a transfer fails or loses bytes.
# Needs root and /dev/fuse (skips with the reason otherwise).
#
# Environment: TBSTREAM_BENCH_MIB (default 1024) bytes per run, in MiB.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
mib=${TBSTREAM_BENCH_MIB:-1024}
count=$((mib * 4)) # 256 KiB blocks

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  skip "cusebench/fuse-fallback-vs-pipe: needs root and /dev/fuse"
  tally
  exit 0
fi
work=$(mktemp -d -t tbstream-bench.XXXXXX)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  mountpoint -q "$work/mnt" 2>/dev/null && umount -l "$work/mnt"
  rm -rf "$work"
}
at_exit cleanup

result() { # result pass|fail DETAIL
  "$1" "cusebench/fuse-fallback-vs-pipe: $2"
  tally
  [ "$1" = pass ]
  exit
}

CGO_ENABLED=0 go build -o "$work/loopdev" ./test/vm/cmd/loopdev || result fail "go build loopdev"
mkdir -p "$work/mnt"
"$work/loopdev" -fuse "$work/mnt" tbstream0 2>"$work/loopdev.log" &
server=$!
for _ in $(seq 200); do [ -e "$work/mnt/tbstream0" ] && break; sleep 0.05; done
[ -e "$work/mnt/tbstream0" ] || result fail "mount did not appear: $(cat "$work/loopdev.log")"

now() { date +%s.%N; }
bytes_of() { sed -n 's/^\([0-9]*\) bytes.*/\1/p' "$1" | tail -n1; }

t0=$(now)
dd if=/dev/zero bs=256k count=$count 2>/dev/null | dd of=/dev/null bs=256k 2>"$work/pipe.r"
t1=$(now)
dd if=/dev/zero of="$work/mnt/tbstream0" bs=256k count=$count 2>"$work/fuse.w" &
writer=$!
dd if="$work/mnt/tbstream0" of=/dev/null bs=256k 2>"$work/fuse.r"
rrc=$?
wait $writer
wrc=$?
t2=$(now)

want=$((mib * 1048576))
pipe_bytes=$(bytes_of "$work/pipe.r")
fuse_bytes=$(bytes_of "$work/fuse.r")
if [ "$rrc" != 0 ] || [ "$wrc" != 0 ] || [ "$fuse_bytes" != "$want" ] || [ "$pipe_bytes" != "$want" ]; then
  result fail "transfer failed: fallback read $fuse_bytes of $want bytes (rc $wrc/$rrc), pipe $pipe_bytes"
fi
line=$(awk -v b="$want" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
  'BEGIN { p = t1 - t0; f = t2 - t1; printf "fallback %.1f MB/s, pipe %.1f MB/s, fallback/pipe = %.3f (%d MiB, dd bs=256k, loopback pipe behind FUSE direct_io, 128 KiB requests)",
           b / f / 1e6, b / p / 1e6, p / f, b / 1048576 }')
result pass "$line"
