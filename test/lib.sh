# test/lib.sh — sourced (bash) by test/run.sh and by every suite in
# test/suites.d. It is written for `set -u`: every variable it reads has a
# default, and what several processes share (apt's update) lives in files,
# not in exported shell variables.
#
#   log MSG                  "== MSG"
#   pass NAME: DETAIL        one result line, counted ("PASS NAME: DETAIL")
#   fail NAME: DETAIL
#   skip NAME: REASON        only for what cannot run on this machine
#   tally                    the suite's closing "tally: passed=N failed=M skipped=K"
#   add_tally FILE WHAT      adds the counts of FILE's last tally line to ours
#   go_tests WHAT ARGS...    go test -json ARGS..., counted by test/tally (every
#                            test and subtest; see its doc) and added to ours
#   need CMD PKG...          makes CMD available: when it is missing, installs the
#                            Debian packages PKG... with apt-get (root only). An
#                            install that fails is a FAIL with apt's own words.
#   need_pkg PKG...          the same for packages that have no command to look
#                            for (libraries, plugins): installs those not installed.
#   at_exit CMD              runs CMD when the script exits, after what a later
#                            at_exit added (use it instead of trap ... EXIT)
#
# Environment (set by test/run.sh, defaults for a suite run alone):
#   TBSTREAM_STATE   a directory shared by the run: apt's update stamp, install log
[ -n "${TBSTREAM_LIB_LOADED:-}" ] && return 0
TBSTREAM_LIB_LOADED=1

# Go's own place, for a root shell whose PATH lacks it (sudo's secure_path).
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
lib_exit=()
at_exit() { lib_exit+=("$*"); }
lib_on_exit() {
  local i
  for ((i = ${#lib_exit[@]} - 1; i >= 0; i--)); do eval "${lib_exit[i]}"; done
}
trap lib_on_exit EXIT

if [ -z "${TBSTREAM_STATE:-}" ]; then
  TBSTREAM_STATE=$(mktemp -d -t tbstream-state.XXXXXX)
  export TBSTREAM_STATE
  # A suite run alone cleans up after itself; under run.sh the run does.
  at_exit 'rm -rf "$TBSTREAM_STATE"'
fi

lib_passed=0 lib_failed=0 lib_skipped=0
log() { printf '== %s\n' "$*"; }
pass() { lib_passed=$((lib_passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { lib_failed=$((lib_failed + 1)); printf 'FAIL %s\n' "$*"; }
skip() { lib_skipped=$((lib_skipped + 1)); printf 'SKIP %s\n' "$*"; }
tally() { printf 'tally: passed=%d failed=%d skipped=%d\n' "$lib_passed" "$lib_failed" "$lib_skipped"; }

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
  lib_passed=$((lib_passed + p)) lib_failed=$((lib_failed + f)) lib_skipped=$((lib_skipped + s))
}

go_tests() {
  local what=$1 rc bin=$TBSTREAM_STATE/tally out=$TBSTREAM_STATE/go-tests.out
  shift
  if [ ! -x "$bin" ] && ! go build -o "$bin" ./test/tally; then
    fail "$what: cannot build test/tally"
    return
  fi
  go test -json "$@" 2>&1 | "$bin" | tee "$out"
  rc=${PIPESTATUS[0]}
  add_tally "$out" "$what"
  # go also exits non-zero for what is no test event (a bad pattern, a
  # go.mod that needs updating): then tally counted no failure.
  if [ "$rc" != 0 ] && ! grep -q '^tally: .*failed=[1-9]' "$out"; then
    fail "$what: go test exited $rc with no failure counted (see above)"
  fi
}

# apt_get ARGS...: apt-get, non-interactive, waiting for a held dpkg lock;
# its output goes to the run's install log (shown when something fails).
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 "$@" \
    >>"$TBSTREAM_STATE/apt.log" 2>&1
}

# apt_install PKG...: apt-get update (once per run), then install.
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "not root: cannot run apt-get install $*" >>"$TBSTREAM_STATE/apt.log"
    return 1
  fi
  if [ ! -e "$TBSTREAM_STATE/apt-updated" ]; then
    apt_get update && : >"$TBSTREAM_STATE/apt-updated" || return 1
  fi
  log "installing $*"
  apt_get install --no-install-recommends "$@"
}

# install_failed WHAT: one FAIL line with the end of apt's log.
install_failed() {
  fail "install $1: $(tail -n 3 "$TBSTREAM_STATE/apt.log" 2>/dev/null | tr '\n' ' ')"
}

need() {
  local cmd=$1
  shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if apt_install "$@" && command -v "$cmd" >/dev/null 2>&1; then
    return 0
  fi
  install_failed "$cmd (apt-get install $*)"
  return 1
}

need_pkg() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}" && return 0
  install_failed "${missing[*]}"
  return 1
}
