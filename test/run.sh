#!/usr/bin/env bash
# test/run.sh — tbstream's single test entry point (the README's test command).
#
# Run as root on a fresh machine. It first hides every command that a new
# machine would not have (test/fresh.sh), so that whatever the tests need
# is installed by them, through apt-get, on every run, here as on a new
# machine (and hides them again before each suite, so that each suite
# installs what it uses); then it runs
#   1. gofmt -l                        (any output is a failure)
#   2. go vet ./..., also with -tags e2e, -tags fault, and -tags usb with cgo
#      (the USB cable's host side, gousb + libusb-1.0-0-dev); the same tag's
#      default-build check: CGO_ENABLED=0 go build still gives a static binary
#   3. go test -race ./...             (counted by test/tally)
#   4. a short smoke run of every fuzz target (TBSTREAM_FUZZTIME, default 30000x each)
#   5. the suites in test/suites.d/*.sh, in name order, each sourcing test/lib.sh
# and prints the time of each part, then exactly one closing line
# `N passed, M failed[, K skipped]`. It exits non-zero when anything failed.
#
# Environment:
#   TBSTREAM_FUZZTIME   go test -fuzztime per target (default 30000x; 0 skips fuzzing).
#                       A count, not a duration: Go 1.26's fuzzing coordinator can
#                       fail a target with a bare "context deadline exceeded" when
#                       a duration ends while a worker is busy (go.dev/issue/75804,
#                       fixed in Go 1.27); a count has no deadline to race.
#   TBSTREAM_SUITES     space-separated suite names to run from test/suites.d
#                       (default: all; "none" runs none)
#   TBSTREAM_FRESH      1 (default): hide what a new machine lacks; 0: use the
#                       machine as it is (apt-get still installs what is missing)
set -uo pipefail

cd "$(dirname "$0")/.."
run_start=$(date +%s)
work=$(mktemp -d -t tbstream-run.XXXXXX)
chmod 755 "$work" # the fresh PATH below is in it, and tests run commands as nobody
export TBSTREAM_STATE=$work/state
mkdir -p "$TBSTREAM_STATE"
. test/lib.sh
. test/fresh.sh
at_exit 'rm -rf "$work"'
fuzztime=${TBSTREAM_FUZZTIME:-30000x}

# timed NAME CMD...: runs CMD and records how long it took.
times=()
timed() {
  local name=$1 t0 rc
  shift
  t0=$(date +%s)
  "$@"
  rc=$?
  times+=("$(printf '%-22s %5d s' "$name" $(($(date +%s) - t0)))")
  return $rc
}

if [ "${TBSTREAM_FRESH:-1}" = 1 ]; then
  log "fresh machine: hiding the commands a new machine does not have"
  if out=$(fresh_setup "$work/fresh" 2>&1); then
    export PATH=$work/fresh/bin
    pass "fresh-machine: $out"
  else
    fail "fresh-machine: $out"
  fi
fi

log "tools"
if ! command -v go >/dev/null 2>&1; then
  # Debian's golang-go is older than go.mod's Go: no apt-get here.
  fail "go: no Go toolchain; install Go $(sed -n 's/^go //p' go.mod) under /usr/local/go"
  echo "$lib_passed passed, $lib_failed failed"
  exit 1
fi
need gcc gcc libc6-dev # go test -race needs cgo

gofmt_check() {
  local unformatted
  unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
  if [ -n "$unformatted" ]; then
    fail "gofmt: $unformatted"
  else
    pass "gofmt"
  fi
}
vet() {
  local tags
  for tags in "" e2e fault; do
    if go vet ${tags:+-tags $tags} ./... >"$work/vet" 2>&1; then
      pass "go vet${tags:+ -tags $tags}"
    else
      cat "$work/vet"
      fail "go vet${tags:+ -tags $tags}"
    fi
  done
}
# The USB cable's host side (nhi/emu/usbcable/usbhost) is cgo + libusb,
# built only with -tags usb; the default build must stay static.
usb_tag() {
  if ! need pkg-config pkg-config || ! need_pkg libusb-1.0-0-dev; then
    fail "go vet -tags usb: cannot install pkg-config and libusb-1.0-0-dev"
    return
  fi
  if CGO_ENABLED=1 go vet -tags usb ./... >"$work/vet" 2>&1 &&
    CGO_ENABLED=1 go build -tags usb -o "$work/tbstreamd-usb" ./cmd/tbstreamd >>"$work/vet" 2>&1; then
    pass "go vet -tags usb (cgo, libusb), go build -tags usb ./cmd/tbstreamd"
  else
    cat "$work/vet"
    fail "go vet -tags usb"
  fi
  need file file || { fail "static build check: cannot install file"; return; }
  if CGO_ENABLED=0 go build -o "$work/tbstreamd-static" ./cmd/tbstreamd >"$work/vet" 2>&1 &&
    file "$work/tbstreamd-static" 2>/dev/null | grep -q 'statically linked'; then
    pass "CGO_ENABLED=0 go build ./cmd/tbstreamd: static binary"
  else
    cat "$work/vet"
    fail "CGO_ENABLED=0 go build ./cmd/tbstreamd is not a static binary: $(file "$work/tbstreamd-static" 2>&1)"
  fi
}
unit() {
  # -count=1: every run really runs, never from the cache.
  go_tests "go test" -race -count=1 -timeout 15m ./...
  # The USB host side's own tests (descriptor checks) need its tag.
  CGO_ENABLED=1 go_tests "go test -tags usb" -race -count=1 -tags usb ./nhi/emu/usbcable/... ./cmd/internal/daemon/
}
fuzz() {
  local file target pkg
  while IFS=: read -r file target; do
    pkg=$(dirname "$file")
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$work/fuzz" 2>&1; then
      pass "fuzz $pkg $target"
    else
      tail -n 40 "$work/fuzz"
      fail "fuzz $pkg $target"
    fi
  done < <(grep -RHoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/:func /:/' | sort)
}

log "gofmt"
timed gofmt gofmt_check
log "go vet"
timed "go vet" vet
timed "go vet -tags usb" usb_tag
log "go test -race ./..."
timed "go test -race" unit
if [ "$fuzztime" != "0" ] && [ "$fuzztime" != "0s" ] && [ "$fuzztime" != "0x" ]; then
  log "fuzz smoke, $fuzztime per target"
  timed "fuzz smoke" fuzz
fi

run_suite() { bash "$1" 2>&1 | tee "$work/suite"; }
suites=${TBSTREAM_SUITES:-all}
for suite in test/suites.d/*.sh; do
  [ -e "$suite" ] || continue
  name=$(basename "$suite" .sh)
  case " $suites " in
    " all "|*" $name "*) ;;
    *) skip "suite $name (not in TBSTREAM_SUITES)"; continue ;;
  esac
  log "suite $name"
  fresh_reset # each suite starts from a new machine and installs what it uses
  # A suite prints its own results and ends with a `tally:` line.
  timed "suite $name" run_suite "$suite"
  add_tally "$work/suite" "suite $name"
done

log "time"
times+=("$(printf '%-22s %5d s' "total" $(($(date +%s) - run_start)))")
printf '%s\n' "${times[@]}"
if [ "$lib_skipped" -gt 0 ]; then
  echo "$lib_passed passed, $lib_failed failed, $lib_skipped skipped"
else
  echo "$lib_passed passed, $lib_failed failed"
fi
[ "$lib_failed" -eq 0 ]
