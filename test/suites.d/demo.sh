#!/usr/bin/env bash
# The README's main job, as a new user runs it: `go run ./cmd/tbstream demo`
# (on a run root of its own), then `go run ./cmd/tbstream down`. The demo
# installs GStreamer itself when it is missing; under test/run.sh's fresh
# machine (test/fresh.sh) it always is, so its own apt-get path runs every
# time. One check per workload and one for down. Ends with a `tally:` line.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

if [ "$(id -u)" != 0 ]; then
  skip "demo: needs root (FUSE mounts, mount namespaces)"
  tally
  exit 0
fi
# The command this suite runs must be the one the README gives.
if grep -qF '| the two-host demo | `go run ./cmd/tbstream demo` |' README.md &&
  grep -qF '| the tests | `test/run.sh` |' README.md; then
  pass "demo/readme: the README's set-up commands are the ones run here and by .ci/run"
else
  fail "demo/readme: README.md's set-up table no longer gives \`go run ./cmd/tbstream demo\` and \`test/run.sh\`"
fi
dir=$(mktemp -d -t tbstream-demo.XXXXXX)
at_exit 'go run ./cmd/tbstream -run "$dir/run" down >/dev/null 2>&1; rm -rf "$dir"'
out=$dir/demo.out
go run ./cmd/tbstream -run "$dir/run" demo >"$out" 2>&1
rc=$?
cat "$out"

# check NAME REGEXP WHAT: one check on the demo's output.
check() {
  if [ "$rc" = 0 ] && line=$(grep -m1 -E "$2" "$out"); then
    pass "demo/$1: ${line#"${line%%[! ]*}"}"
  else
    fail "demo/$1: no '$3' in the demo's output (exit $rc)"
  fi
}
check backup '^ +256 MiB in .* sha256 .* equal on both hosts' "the backup's sha256 equal on both hosts"
check tar-gzip '^ +[0-9.]+ s; diff -r finds no difference' "diff -r clean"
check video '^ +100 frames decoded on host2' "100 frames decoded"
if grep -q 'installing GStreamer' "$out"; then
  echo "demo: GStreamer was missing; the demo installed it"
fi

if go run ./cmd/tbstream -run "$dir/run" down && [ ! -e "$dir/run/host1/pid" ] && [ ! -e "$dir/run/host2/pid" ]; then
  pass "demo/down: both hosts stopped"
else
  fail "demo/down: $(ls "$dir"/run/*/ 2>&1 | tr '\n' ' ')"
fi
tally
