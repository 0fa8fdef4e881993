#!/usr/bin/env bash
# test/run.sh — tbstream's single test entry point (the README's test command).
#
# Run as root on a fresh machine: it installs what is missing (apt-get), then runs
#   1. gofmt -l            (any output is a failure)
#   2. go vet ./...
#   3. go test -race ./...  (every Go test and subtest counted individually)
#   4. a short smoke run of every fuzz target (TBSTREAM_FUZZTIME, default 10s each)
#   5. the slower suites in test/suites.d/*.sh, in name order
# and ends with exactly one closing line `N passed, M failed[, K skipped]`.
# It exits non-zero when anything failed.
#
# Environment:
#   TBSTREAM_FUZZTIME   fuzz smoke duration per target (default 10s; 0 skips fuzzing)
#   TBSTREAM_SUITES     space-separated suite names to run from test/suites.d
#                       (default: all; "none" runs none)
set -uo pipefail

cd "$(dirname "$0")/.."
top=$(pwd)
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
fuzztime=${TBSTREAM_FUZZTIME:-10s}

passed=0 failed=0 skipped=0
work=$(mktemp -d -t tbstream-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

log() { printf '== %s\n' "$*"; }
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
skip() { skipped=$((skipped + 1)); printf 'SKIP %s\n' "$*"; }

# add_tally FILE: adds the counts of a `tally:` line (test/tally) to ours.
add_tally() {
  local line p f s
  line=$(grep '^tally: ' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    fail "$2: no result line (the runner died)"
    return
  fi
  p=${line#*passed=}; p=${p%% *}
  f=${line#*failed=}; f=${f%% *}
  s=${line#*skipped=}
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

# need CMD PACKAGE...: installs the Debian packages when CMD is missing.
apt_updated=
need() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing $cmd and not root: cannot install $*"
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
  command -v "$cmd" >/dev/null 2>&1
}
export -f need log

log "installing what is missing"
need go golang-go || { echo "no Go toolchain"; echo "0 passed, 1 failed"; exit 1; }
need gcc gcc libc6-dev || fail "install gcc (needed by go test -race)"

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  fail "gofmt: $unformatted"
else
  pass "gofmt"
fi

log "go vet"
if go vet ./... >"$work/vet" 2>&1; then
  pass "go vet"
else
  cat "$work/vet"
  fail "go vet"
fi

log "go test -race ./..."
go build -o "$work/tally" ./test/tally || fail "build test/tally"
# -count=1: every run really runs, never from the cache.
go test -race -count=1 -timeout 15m -json ./... 2>&1 | "$work/tally" | tee "$work/unit"
add_tally "$work/unit" "go test"

if [ "$fuzztime" != "0" ] && [ "$fuzztime" != "0s" ]; then
  log "fuzz smoke, $fuzztime per target"
  while IFS=: read -r file target; do
    pkg=$(dirname "$file")
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$work/fuzz" 2>&1; then
      pass "fuzz $pkg $target"
    else
      tail -n 40 "$work/fuzz"
      fail "fuzz $pkg $target"
    fi
  done < <(grep -RHoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/:func /:/' | sort)
fi

export TBSTREAM_TALLY="$work/tally"
suites=${TBSTREAM_SUITES:-all}
for suite in test/suites.d/*.sh; do
  [ -e "$suite" ] || continue
  name=$(basename "$suite" .sh)
  case " $suites " in
    " all "|*" $name "*) ;;
    *) skip "suite $name (not in TBSTREAM_SUITES)"; continue ;;
  esac
  log "suite $name"
  # A suite prints its own results and ends with a `tally:` line.
  bash "$suite" 2>&1 | tee "$work/suite"
  add_tally "$work/suite" "suite $name"
done

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
