#!/usr/bin/env bash
# End-to-end suite on the host: two emulated hosts (tbstream up) with the FUSE
# fallback devices, the kernel documentation's command lines run verbatim in
# `tbstream shell`, then the dd benchmark against dd | socat | dd over TCP.
# Prints results and ends with a `tally:` line (see test/run.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."

need gst-launch-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good >/dev/null ||
  echo "gstreamer could not be installed: the video test will skip"
need socat socat >/dev/null || echo "socat could not be installed: the benchmark has no baseline"
need unshare util-linux >/dev/null
need gunzip gzip >/dev/null
need bc bc >/dev/null

tally=${TBSTREAM_TALLY:-}
if [ -z "$tally" ]; then
  tally=$(mktemp)
  go build -o "$tally" ./test/tally
fi
go test -tags e2e -count=1 -timeout 20m -json ./test/e2e 2>&1 | "$tally" | tee /tmp/tbstream-e2e.$$
line=$(grep '^tally: ' /tmp/tbstream-e2e.$$ | tail -n 1)
rm -f /tmp/tbstream-e2e.$$
p=${line#*passed=}; p=${p%% *}
f=${line#*failed=}; f=${f%% *}
s=${line#*skipped=}

if bash test/bench/dd.sh; then
  p=$((p + 1))
else
  echo "FAIL benchmark test/bench/dd.sh"
  f=$((f + 1))
fi
echo "tally: passed=$p failed=$f skipped=$s"
