#!/usr/bin/env bash
# The files that install tbstreamd as a service: the systemd unit
# cmd/tbstreamd/systemd/tbstreamd@.service (systemd-analyze verify, where a
# warning fails as an error does; run by a stand-in service manager in
# test/twohosts, and by systemd itself where PID 1 is systemd) and the udev
# rules cmd/tbstreamd/udev/70-tbstream.rules (udevadm verify where it
# exists, and a syntax check of this suite's own, itself checked on broken
# rules). Ends with a `tally:` line.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

unit=cmd/tbstreamd/systemd/tbstreamd@.service
rules=cmd/tbstreamd/udev/70-tbstream.rules
tmp=$(mktemp -d -t tbstream-service.XXXXXX)
at_exit 'rm -rf "$tmp"'

# --- systemd-analyze verify -------------------------------------------------

# verify NAME FILE: systemd-analyze verify FILE, which must say nothing:
# it reports most mistakes (an unknown key, a value it cannot parse) as a
# warning and exits 0.
verify() {
  local out rc
  out=$(systemd-analyze verify "$2" 2>&1)
  rc=$?
  if [ "$rc" = 0 ] && [ -z "$out" ]; then
    pass "service/verify-$1: systemd-analyze verify $(basename "$2"): no error, no warning"
  else
    fail "service/verify-$1: systemd-analyze verify $(basename "$2") exited $rc: $(printf '%s' "$out" | tr '\n' ' ')"
  fi
}

built=0
if ! CGO_ENABLED=0 go build -o "$tmp/tbstreamd" ./cmd/tbstreamd; then
  fail "service/build: go build ./cmd/tbstreamd"
else
  built=1
fi
if [ "$built" = 1 ] && need systemd-analyze systemd; then
  # verify checks that ExecStart's program exists: the copies run the
  # one just built, and differ from the unit in that path alone.
  sed "s|^ExecStart=/usr/local/bin/tbstreamd |ExecStart=$tmp/tbstreamd |" "$unit" >"$tmp/tbstreamd@.service"
  if [ "$(diff "$unit" "$tmp/tbstreamd@.service" | grep -c '^>')" = 1 ]; then
    verify template "$tmp/tbstreamd@.service"
    cp "$tmp/tbstreamd@.service" "$tmp/tbstreamd@hostA.service"
    verify instance "$tmp/tbstreamd@hostA.service"
  else
    fail "service/verify: $unit's ExecStart no longer starts with /usr/local/bin/tbstreamd"
  fi
  # The check itself: a misspelled key is only a warning to verify.
  mkdir -p "$tmp/bad"
  sed 's/^KillMode=/KillMod=/' "$tmp/tbstreamd@.service" >"$tmp/bad/tbstreamd@.service"
  out=$(systemd-analyze verify "$tmp/bad/tbstreamd@.service" 2>&1)
  if [[ $out == *KillMod* ]]; then
    pass "service/verify-catches: a misspelled key is reported: $(printf '%s' "$out" | head -n 1)"
  else
    fail "service/verify-catches: systemd-analyze verify said nothing of a misspelled key: $out"
  fi
fi

# --- the unit run ------------------------------------------------------------

# Under a stand-in service manager: the unit's ExecStart, RuntimeDirectory,
# EnvironmentFile (from the example), NOTIFY_SOCKET and KillSignal.
if [ "$(id -u)" = 0 ]; then
  go_tests "unit under a stand-in service manager" -tags e2e -count=1 -timeout 5m ./test/twohosts
else
  skip "service/stand-in: needs root (the daemon mounts FUSE file systems)"
fi

# real_unit: the unit, as a runtime unit of its own name, started and stopped
# by systemd, on loopback.
real_unit() {
  local name=tbstreamd-test$$ inst=svc$$ svc run out
  svc=$name@$inst.service
  run=/run/tbstream/$inst
  sed -e "s|^ExecStart=/usr/local/bin/tbstreamd |ExecStart=$tmp/tbstreamd |" \
    -e "s|^EnvironmentFile=/etc/tbstream/%i.conf\$|EnvironmentFile=$tmp/%i.conf|" "$unit" >"/run/systemd/system/$name@.service"
  at_exit "systemctl stop '$svc' >/dev/null 2>&1; rm -f '/run/systemd/system/$name@.service'; systemctl daemon-reload; systemctl reset-failed '$svc' >/dev/null 2>&1"
  (umask 077 && head -c 32 /dev/urandom | base64 >"$tmp/cable.key")
  echo "TBSTREAMD_OPTS=-listen tcp:127.0.0.1:0 -cable-key $tmp/cable.key -adapter 1 -peer-route 1" >"$tmp/$inst.conf"
  systemctl daemon-reload
  if ! out=$(timeout 120 systemctl start "$svc" 2>&1); then
    fail "service/systemd-start: systemctl start $svc: $out"
    journalctl -u "$svc" --no-pager -n 20 2>&1
    return
  fi
  local state status mode
  state=$(systemctl show -p ActiveState --value "$svc")/$(systemctl show -p SubState --value "$svc")
  status=$(systemctl show -p StatusText --value "$svc")
  mode=$(stat -c '%a %U' "$run" 2>&1)
  if [ "$state" = active/running ] && [[ $status == "serving $run "* ]] && [ "$mode" = "700 root" ] &&
    [ -S "$run/status.sock" ] && [ -d "$run/config/thunderbolt/stream" ]; then
    pass "service/systemd-start: $svc $state, status \"$status\", $run mode $mode, configfs mounted"
  else
    fail "service/systemd-start: $svc $state, status \"$status\", $run: $mode"
  fi
  if ! out=$(timeout 120 systemctl stop "$svc" 2>&1); then
    fail "service/systemd-stop: systemctl stop $svc: $out"
    return
  fi
  state=$(systemctl show -p ActiveState --value "$svc")/$(systemctl show -p Result --value "$svc")
  if [ "$state" = inactive/success ] && [ ! -e "$run" ] && ! grep -q " $run/" /proc/self/mountinfo &&
    journalctl -u "$svc" --no-pager -o cat 2>/dev/null | grep -q 'tbstreamd stopping'; then
    pass "service/systemd-stop: $svc $state, $run removed, nothing mounted, the daemon's log in the journal"
  else
    fail "service/systemd-stop: $svc $state, $run $(ls -d "$run" 2>/dev/null || echo removed); journal: $(journalctl -u "$svc" --no-pager -o cat 2>&1 | tail -n 3 | tr '\n' ' ')"
  fi
}

pid1=$(cat /proc/1/comm 2>/dev/null)
if [ "$(id -u)" != 0 ]; then
  skip "service/systemd: needs root"
elif [ "$built" = 1 ] && [ -d /run/systemd/system ] && [ "$pid1" = systemd ]; then
  real_unit
elif [ "$built" = 1 ]; then
  skip "service/systemd: PID 1 is ${pid1:-unknown}, not systemd (no /run/systemd/system): the unit cannot run under systemd here; the stand-in above ran it"
fi

# --- udev rules --------------------------------------------------------------

# udev_lint FILE...: the syntax of udev rules files, as udev(7) gives it: each
# rule a line (a trailing backslash continues it) of comma-separated
# KEY[{attr}]OP"value" with a known key, an operator that key takes (== and
# != match, = += -= := assign), the {attr} that key needs, and an octal
# MODE. Prints each problem as FILE:LINE: PROBLEM; fails if there is one.
udev_lint() {
  awk '
  function problem(msg) { printf "%s:%d: %s\n", FILENAME, start, msg; bad = 1 }
  function trim(s) { sub(/^[ \t]+/, "", s); return s }
  BEGIN {
    # m: match only, a: assignment only, b: both; attr: r required, o optional.
    n = split("ACTION:m DEVPATH:m KERNEL:m KERNELS:m SUBSYSTEM:m SUBSYSTEMS:m DRIVER:m DRIVERS:m TAGS:m PROGRAM:m RESULT:m CONST:m TEST:m IMPORT:m ATTRS:m NAME:b SYMLINK:b TAG:b ATTR:b SYSCTL:b ENV:b OWNER:a GROUP:a MODE:a SECLABEL:a RUN:a LABEL:a GOTO:a OPTIONS:a", kinds, " ")
    for (i = 1; i <= n; i++) { split(kinds[i], kv, ":"); kind[kv[1]] = kv[2] }
    n = split("ATTRS:r CONST:r IMPORT:r ATTR:r SYSCTL:r ENV:r SECLABEL:r TEST:o RUN:o", kinds, " ")
    for (i = 1; i <= n; i++) { split(kinds[i], kv, ":"); attr[kv[1]] = kv[2] }
  }
  FNR == 1 { rule = "" }
  {
    if (rule == "") start = FNR
    line = $0
    if (line ~ /\\$/) { rule = rule substr(line, 1, length(line) - 1); next }
    line = trim(rule line)
    rule = ""
    if (line == "" || substr(line, 1, 1) == "#") next
    assigns = 0
    while (1) {
      if (!match(line, /^[A-Z_]+/)) { problem("expected a KEY at: " line); next }
      key = substr(line, 1, RLENGTH); line = substr(line, RLENGTH + 1)
      if (!(key in kind)) { problem("unknown key " key); next }
      a = ""
      if (substr(line, 1, 1) == "{") {
        e = index(line, "}")
        if (e == 0) { problem(key ": { without }"); next }
        a = substr(line, 2, e - 2); line = substr(line, e + 1)
        if (!(key in attr)) { problem(key " takes no {attribute}"); next }
        if (a == "") { problem(key ": empty {attribute}"); next }
      } else if (attr[key] == "r") { problem(key " needs a {attribute}"); next }
      line = trim(line)
      if (!match(line, /^(==|!=|\+=|-=|:=|=)/)) { problem(key ": expected an operator (== != = += -= :=) at: " line); next }
      op = substr(line, 1, RLENGTH); line = trim(substr(line, RLENGTH + 1))
      matching = (op == "==" || op == "!=")
      if (matching && kind[key] == "a") { problem(key " is assigned (=), not matched (" op ")"); next }
      if (!matching && kind[key] == "m" && key != "IMPORT") { problem(key " is matched (==), not assigned (" op ")"); next }
      if (!matching) assigns++
      if (substr(line, 1, 1) != "\"") { problem(key ": the value must be in double quotes at: " line); next }
      for (i = 2; i <= length(line); i++) {
        c = substr(line, i, 1)
        if (c == "\\") { i++; continue }
        if (c == "\"") break
      }
      if (i > length(line)) { problem(key ": unterminated value"); next }
      value = substr(line, 2, i - 2); line = trim(substr(line, i + 1))
      if (key == "MODE" && value !~ /^[0-7][0-7][0-7][0-7]?$/) { problem("MODE \"" value "\" is not octal permissions") ; next }
      if ((key == "GROUP" || key == "OWNER") && value == "") { problem(key " is empty"); next }
      if (line == "") break
      if (substr(line, 1, 1) != ",") { problem("expected , after " key "\"" value "\" at: " line); next }
      line = trim(substr(line, 2))
      if (line == "") { problem("a trailing comma"); next }
    }
    if (assigns == 0) problem("a rule that assigns nothing")
    rules++
  }
  END {
    if (rule != "") { start = FNR; problem("a continuation at the end of the file") }
    if (!bad && rules == 0) { print FILENAME ": no rules"; bad = 1 }
    exit bad
  }' "$@"
}

if out=$(udev_lint "$rules" 2>&1); then
  pass "service/udev-syntax: $rules: $(grep -c '^[A-Z]' "$rules") rules, each comma-separated KEY[{attr}]OP\"value\" with known keys and operators"
else
  fail "service/udev-syntax: $(printf '%s' "$out" | tr '\n' ' ')"
fi
# The check itself: each of these broken rules must be found.
bad=0
while IFS= read -r rule; do
  printf '%s\n' "$rule" >"$tmp/bad.rules"
  if udev_lint "$tmp/bad.rules" >/dev/null 2>&1; then
    fail "service/udev-syntax-catches: not found broken: $rule"
    bad=1
  fi
done <<'EOF'
SUBSYSTEM="cuse", KERNEL=="tbstream[0-9]*", GROUP="tbstream", MODE="0660"
SUBSYSTEM=="cuse", KERNEL=="tbstream[0-9]*", GROUP=="tbstream", MODE="0660"
SUBSYSTEM=="cuse" KERNEL=="tbstream[0-9]*", GROUP="tbstream", MODE="0660"
SUBSYSTEM=="cuse", KERNEL=="tbstream[0-9]*", GROUP="tbstream", MODE="660x"
SUBSYSTEM=="cuse", KERNEL=="tbstream[0-9]*, GROUP="tbstream", MODE="0660"
SUBSYSTEM=="usb", ATTR{idVendor=="1d6b", GROUP="tbstream", MODE="0660"
SUBSYSTEM=="usb", ATTR=="1d6b", GROUP="tbstream", MODE="0660"
SUBSYSTEM=="usb", ATTR{idVendor}=="1d6b", GRUOP="tbstream", MODE="0660"
SUBSYSTEM=="usb", ATTR{idVendor}=="1d6b", GROUP=tbstream, MODE="0660"
SUBSYSTEM=="usb", ATTR{idVendor}=="1d6b", GROUP="tbstream", MODE="0660",
SUBSYSTEM=="usb", ATTR{idVendor}=="1d6b"
EOF
[ "$bad" = 0 ] && pass "service/udev-syntax-catches: 11 kinds of broken rule are found (= for ==, == for =, a missing comma or quote or }, an octal MODE, an unknown key, ...)"
# The rules match the daemon's devices and the gadget's default ID.
vid=$(sed -n 's/^[[:space:]]*DefaultVendorID[[:space:]]*= 0x\([0-9a-f]*\).*/\1/p' nhi/emu/usbcable/ids.go)
pid=$(sed -n 's/^[[:space:]]*DefaultProductID[[:space:]]*= 0x\([0-9a-f]*\).*/\1/p' nhi/emu/usbcable/ids.go)
if [ -n "$vid" ] && grep -q "^SUBSYSTEM==\"usb\",.*ATTR{idVendor}==\"$vid\", ATTR{idProduct}==\"$pid\", GROUP=\"tbstream\", MODE=\"0660\"" "$rules" &&
  grep -q '^SUBSYSTEM=="cuse", KERNEL=="tbstream\[0-9\]\*|.*GROUP="tbstream", MODE="0660"' "$rules"; then
  pass "service/udev-match: the CUSE nodes (subsystem cuse) and the gadget's default ID $vid:$pid, group tbstream, mode 0660"
else
  fail "service/udev-match: $rules lacks the cuse rule or the gadget's default ID ${vid:-?}:${pid:-?}"
fi
if command -v udevadm >/dev/null 2>&1 && udevadm verify --help >/dev/null 2>&1; then
  if out=$(udevadm verify --resolve-names=never "$rules" 2>&1); then
    pass "service/udevadm-verify: $rules"
  else
    fail "service/udevadm-verify: $(printf '%s' "$out" | tr '\n' ' ')"
  fi
else
  skip "service/udevadm-verify: no udevadm verify here (it came with systemd 254; this machine has $(systemd-analyze --version 2>/dev/null | head -n 1 || echo 'no systemd')$(command -v udevadm >/dev/null || echo ', and no udev')); the syntax check above stands in"
fi
tally
