#!/usr/bin/env bash
# test/suites.d/nhibench.sh — one-way bulk transfer through two emulated hosts.
#
#   host1 (emu NHI)                          host2 (emu NHI)
#   TX ring ─► DMA engine ─► lane 3 ══cable══ lane 1 ─► RX ring
#                            (in-process, a unix socket, or shared memory)
#
# Runs the nhi/emu Bulk benchmarks briefly and prints MB/s, frames/s and the
# ratio to a copy() of the same bytes timed in the same run (alternating
# rounds). The ratios are reported, not asserted: a completed run counts as
# one passed test. Ends with `tally: passed=N failed=M skipped=K`.
#
# Environment:
#   TBSTREAM_NHIBENCH_TIME  -benchtime per benchmark (default 1s)
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh
benchtime=${TBSTREAM_NHIBENCH_TIME:-1s}
out=$TBSTREAM_STATE/nhibench.out

echo "== nhi/emu bulk benchmarks (-benchtime $benchtime)"
if go test -run '^$' -bench 'Bulk' -benchtime "$benchtime" -count 1 ./nhi/emu >"$out" 2>&1; then
  grep '^Benchmark' "$out"
  echo
  printf '%-28s %12s %14s %12s %8s\n' benchmark MB/s frames/s copy-MB/s ratio
  awk '/^Benchmark/ {
    name=$1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
    for (i = 2; i < NF; i++) {
      if ($(i+1) == "MB/s") mb=$i
      if ($(i+1) == "frames/s") fps=$i
      if ($(i+1) == "copy-MB/s") cmb=$i
      if ($(i+1) == "ratio") r=$i
    }
    printf "%-28s %12.0f %14.0f %12.0f %8.3f\n", name, mb, fps, cmb, r
  }' "$out"
  pass "nhibench"
else
  tail -n 40 "$out"
  fail "nhibench"
fi
tally
