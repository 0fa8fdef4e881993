#!/usr/bin/env bash
# dd throughput through tbstream next to the obvious alternative, measured in
# the same run: host1 `dd if=/dev/zero bs=256k count=4096 of=/dev/tbstream0`
# into host2 `dd of=/dev/null`, two daemons joined by a unix-socket cable,
# against `dd | nc | dd` over loopback TCP. Prints MB/s and the ratio.
# Needs nc (netcat-openbsd), ss (iproute2) and bc: test/suites.d/e2e.sh
# installs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${TBSTREAM_BENCH_COUNT:-4096} # × 256 KiB = 1 GiB
bytes=$((count * 256 * 1024))
dir=$(mktemp -d)
bin=$dir/tbstream
run=$dir/run
trap '"$bin" -run "$run" down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
go build -o "$bin" ./cmd/tbstream
"$bin" -run "$run" up

root=/sys/kernel/config/thunderbolt/stream
"$bin" -run "$run" shell host2 sh -ec "mkdir $root/0-1.0 $root/0-1.0/bench
echo -1 > $root/0-1.0/bench/in_hopid; echo -1 > $root/0-1.0/bench/out_hopid"
"$bin" -run "$run" shell host1 sh -ec "mkdir $root/0-503.0 $root/0-503.0/bench
for i in \$(seq 200); do [ \"\$(cat $root/0-503.0/bench/out_hopid)\" -gt 0 ] && break; sleep 0.05; done"

now() { date +%s.%N; }
start=$(now)
"$bin" -run "$run" shell host2 sh -c "dd if=/dev/tbstream0 of=/dev/null bs=256k 2>$dir/recv.txt" &
recv=$!
"$bin" -run "$run" shell host1 dd if=/dev/zero of=/dev/tbstream0 bs=256k count="$count" status=none
wait "$recv"
end=$(now)
got=$(sed -n 's/^\([0-9]*\) bytes.*/\1/p' "$dir/recv.txt")
[ "$got" = "$bytes" ] || { echo "tbstream moved $got bytes, want $bytes"; cat "$dir/recv.txt"; exit 1; }
tb=$(echo "$bytes / ($end - $start) / 1000000" | bc -l)

# The fastest thing a user would pick instead: nc over loopback TCP
# (netcat-openbsd; -N ends the connection at the end of the input).
port=$((20000 + RANDOM % 20000))
nc -l 127.0.0.1 "$port" | dd of=/dev/null bs=256k 2>"$dir/nc.txt" &
l=$!
for _ in $(seq 100); do ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port " && break; sleep 0.05; done
start=$(now)
dd if=/dev/zero bs=256k count="$count" status=none | nc -N 127.0.0.1 "$port"
wait "$l"
end=$(now)
got=$(sed -n 's/^\([0-9]*\) bytes.*/\1/p' "$dir/nc.txt")
[ "$got" = "$bytes" ] || { echo "nc moved $got bytes, want $bytes"; cat "$dir/nc.txt"; exit 1; }
base=$(echo "$bytes / ($end - $start) / 1000000" | bc -l)

printf 'BENCH tbstream dd (FUSE fallback, unix-socket cable): %.0f MB/s\n' "$tb"
printf 'BENCH dd | nc | dd over loopback TCP:                 %.0f MB/s\n' "$base"
printf 'BENCH ratio tbstream / nc: %.2f\n' "$(echo "$tb / $base" | bc -l)"
