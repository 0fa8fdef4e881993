#!/bin/busybox sh
# Bad inputs to the USB cable, and `tbstream up -cable usb`, in
# the VM. Sourced by test/vm/usb.sh before its usb-down check, with its
# helpers (uon, urecv, usend, uclean, urun, ulogs, upaired, uwait_paired,
# ualive, ustop, uwait_open, ustart_host2) and the two daemons running;
# leaves them running again.
#
#   usb-bad-descriptors  a gadget with the cable's IDs but other descriptors
#                        (test/vm/cmd/usbfake): host2 says so once, claims
#                        nothing, keeps running, pairs with the real one after
#   usb-bad-permission   host2 as root without CAP_DAC_OVERRIDE on a mode 000
#                        device node: one line naming the udev rule, no spin
#   usb-never-enabled    the host core never configures the gadget
#                        (authorized_default 0): host1 says so once, SIGTERM
#                        still stops it and removes the gadget
#   usb-tbstream-up      tbstream up -cable usb:dummy_udc.0 (a -tags usb build
#                        run directly), 1 MB host1 → host2
#   usb-tbstream-down    tbstream down: both daemons gone, the gadget too
#
# Each check starts from the daemons it needs, whatever the last one left.

# The cgo binaries run directly: their ELF interpreter, /lib64's loader,
# is the host machine's over 9p, and so are their libraries. (Run through
# the loader by name, /proc/self/exe is the loader, and `tbstream up`
# could not re-run itself.)
mkdir -p /lib64
[ -e /lib64/ld-linux-x86-64.so.2 ] || ln -s $LIB/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
export LD_LIBRARY_PATH=$LIB

ustart_host1() {
  tbstreamd -name host1 -run-dir $URUN/host1 -device-prefix host1/ -adapter 3 -peer-route 503 \
    -cable usb-gadget:dummy_udc.0 >>$URUN/host1/log 2>&1 &
}
# urunning HOST: HOST's daemon runs.
urunning() { ualive "$(cat $URUN/$1/pid 2>/dev/null)"; }
# udummy_bus: the USB bus number of the root hub of dummy_hcd.0 (the
# daemons' dummy_udc.0); the gadget is device BUS-1 on its one port.
udummy_bus() {
  for u in /sys/bus/usb/devices/usb*; do
    case $(readlink -f $u) in */dummy_hcd.0/*) cat $u/busnum; return 0 ;; esac
  done
  return 1
}
# ucount PATTERN FILE: lines of FILE matching PATTERN.
ucount() {
  c=$(grep -c "$1" "$2" 2>/dev/null)
  echo "${c:-0}"
}
UB=$(udummy_bus)
UDEV=/sys/bus/usb/devices/$UB-1

# ---- a device with the cable's IDs but other descriptors, three ways.
ubad_desc() {
  ustop host1 || return 1
  urunning host2 || ustart_host2
  for i in $(seq 50); do [ -d $UG ] || break; sleep 0.2; done
  for kind in onebulk interrupt class; do
    log=$URUN/host2/log
    n0=$(ucount 'not its descriptors' $log)
    usbfake $kind >/tmp/usbfake.out 2>&1 &
    f=$!
    for i in $(seq 120); do [ "$(ucount 'not its descriptors' $log)" -gt "$n0" ] && break; sleep 0.5; done
    sleep 3 # 12 more polls of host2's
    n=$(ucount 'not its descriptors' $log)
    line=$(grep 'not its descriptors' $log | tail -n 1)
    drv=$(readlink $UDEV:1.0/driver 2>/dev/null)
    peers=$($UTB list 2>&1 | grep -c XDomain)
    kill $f
    wait $f
    [ -d /sys/kernel/config/usb_gadget/tbstream-fake ] && { echo "$kind: usbfake left its gadget"; return 1; }
    [ "$n" = $((n0 + 1)) ] || { echo "$kind: $((n - n0)) lines about the descriptors, want 1; usbfake: $(cat /tmp/usbfake.out)"; return 1; }
    case $kind in
      onebulk) want='1 bulk IN and 0 bulk OUT' ;;
      interrupt) want='is not bulk' ;;
      class) want='interface class' ;;
    esac
    echo "$line" | grep -q "$want" || { echo "$kind: the line does not say '$want': $line"; return 1; }
    urunning host2 || { echo "$kind: host2 died"; return 1; }
    grep -q '^panic:' $log && { echo "$kind: host2 panicked"; return 1; }
    [ -z "$drv" ] || { echo "$kind: the interface was claimed ($drv)"; return 1; }
    [ "$peers" = 0 ] || { echo "$kind: $peers peers listed"; return 1; }
    echo "$kind: $(echo "$line" | sed 's/.*err="*//' | cut -c1-90)"
  done
  ustart_host1
  uwait_paired 240 || { echo "not paired with the real gadget after the fakes"; return 1; }
}
if urun 400 ubad_desc /tmp/ubd.out; then
  ok "usb-bad-descriptors: 1d6b:0104 with other descriptors: host2 logged one line each, claimed nothing, kept running, then paired with the real gadget: $(grep -E '^(onebulk|interrupt|class):' /tmp/ubd.out | tr '\n' ';')"
else
  bad "usb-bad-descriptors: $(tail -n 4 /tmp/ubd.out | tr '\n' ' ') $(ulogs)"
fi
kill $(pidof usbfake) 2>/dev/null

# ---- permission denied on /dev/bus/usb: host2 as root bound by file
# modes (vmcheck nodac), the device node mode 000.
ubad_perm() {
  ustop host2 || return 1
  urunning host1 || ustart_host1
  for i in $(seq 120); do [ -e $UDEV/devnum ] && break; sleep 0.5; done
  node=/dev/bus/usb/$(printf %03d "$UB")/$(printf %03d "$(cat $UDEV/devnum 2>/dev/null)")
  [ -c "$node" ] || { echo "no device node $node"; return 1; }
  mode=$(stat -c %a $node)
  echo "$node $mode" >/tmp/ubp.node
  chmod 000 $node
  log=$URUN/host2/log
  n0=$(ucount '70-tbstream.rules' $log)
  vmcheck nodac /bin/tbstreamd-usb -name host2 -run-dir $URUN/host2 -device-prefix host2/ \
    -adapter 1 -peer-route 1 -cable usb >>$log 2>&1 &
  p=$!
  for i in $(seq 120); do [ "$(ucount '70-tbstream.rules' $log)" -gt "$n0" ] && break; sleep 0.5; done
  capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/$p/status)
  l1=$(wc -l <$log)
  sleep 5 # 20 polls of host2's
  l2=$(wc -l <$log)
  n=$(ucount '70-tbstream.rules' $log)
  line=$(grep '70-tbstream.rules' $log | tail -n 1)
  chmod "$mode" $node
  [ -n "$capeff" ] && [ $((0x$capeff & 6)) = 0 ] || { echo "host2's CapEff $capeff: DAC overrides not dropped"; return 1; }
  [ "$n" = $((n0 + 1)) ] || { echo "$((n - n0)) lines naming the udev rule, want 1"; return 1; }
  [ $((l2 - l1)) -le 1 ] || { echo "$((l2 - l1)) log lines in 5 s: spinning"; return 1; }
  echo "$line" | grep -q 'idVendor.*1d6b.*idProduct.*0104' || { echo "the line names no rule for 1d6b:0104: $line"; return 1; }
  ualive $p || { echo "host2 died"; return 1; }
  echo "line: $(echo "$line" | sed 's/.*err="*//' | cut -c1-150)"
  uwait_paired 240 || { echo "not paired after mode $mode was restored"; return 1; }
}
if urun 300 ubad_perm /tmp/ubp.out; then
  ok "usb-bad-permission: $(cut -d' ' -f1 /tmp/ubp.node) mode 000, host2 without CAP_DAC_OVERRIDE: one line, quiet for 5 s, paired once the mode was back: $(grep '^line:' /tmp/ubp.out | cut -c7-)"
else
  bad "usb-bad-permission: $(tail -n 4 /tmp/ubp.out | tr '\n' ' ') $(ulogs)"
fi
[ -s /tmp/ubp.node ] && chmod "$(cut -d' ' -f2 /tmp/ubp.node)" "$(cut -d' ' -f1 /tmp/ubp.node)" 2>/dev/null

# ---- a gadget whose host never enables it: dummy_hcd's root hub leaves
# new devices unauthorized, so Linux never sets a configuration.
unoenable() {
  ustop host1 || return 1
  ustop host2 || return 1
  for i in $(seq 50); do [ -e $UDEV ] || break; sleep 0.2; done
  echo 0 >/sys/bus/usb/devices/usb$UB/authorized_default || return 1
  log=$URUN/host1/log
  n0=$(ucount 'host has not enabled it' $log)
  ustart_host1
  for i in $(seq 120); do [ "$(cat $UDEV/authorized 2>/dev/null)" = 0 ] && break; sleep 0.5; done
  [ "$(cat $UDEV/authorized 2>/dev/null)" = 0 ] || { echo "no unauthorized $UDEV: $(ls /sys/bus/usb/devices)"; return 1; }
  for i in $(seq 120); do [ "$(ucount 'host has not enabled it' $log)" -gt "$n0" ] && break; sleep 0.5; done
  sleep 12 # longer than the daemon's wait before it says so
  n=$(ucount 'host has not enabled it' $log)
  line=$(grep 'host has not enabled it' $log | tail -n 1)
  [ "$n" = $((n0 + 1)) ] || { echo "$((n - n0)) lines saying the host has not enabled it, want 1"; return 1; }
  urunning host1 || { echo "host1 died"; return 1; }
  [ "$($UTB list 2>&1 | grep -c XDomain)" = 0 ] || { echo "host1 lists a peer"; return 1; }
  p=$(cat $URUN/host1/pid)
  kill "$p"
  for i in $(seq 25); do ualive "$p" || break; sleep 0.2; done
  ualive "$p" && { echo "host1 still runs 5 s after SIGTERM"; return 1; }
  [ -d $UG ] && { echo "SIGTERM left $UG"; return 1; }
  echo "line: $(echo "$line" | sed 's/.*level=WARN msg=//' | cut -c1-110)"
  # Bound again, still not authorized; then authorized by hand.
  ustart_host1
  for i in $(seq 120); do [ "$(cat $UDEV/authorized 2>/dev/null)" = 0 ] && break; sleep 0.5; done
  echo 1 >/sys/bus/usb/devices/usb$UB/authorized_default
  echo 1 >$UDEV/authorized || { echo "cannot authorize $UDEV"; return 1; }
  ustart_host2
  uwait_paired 240 || { echo "not paired after authorizing $UDEV"; return 1; }
}
if [ -z "$UB" ]; then
  bad "usb-never-enabled: no dummy_hcd root hub in /sys/bus/usb/devices"
elif urun 300 unoenable /tmp/une.out; then
  ok "usb-never-enabled: $UDEV left unauthorized: host1 stayed up, no peer, $(grep '^line:' /tmp/une.out | cut -c7-); SIGTERM stopped it and removed the gadget within 5 s; authorized, it paired"
else
  bad "usb-never-enabled: $(tail -n 4 /tmp/une.out | tr '\n' ' ') $(ulogs)"
fi
[ -n "$UB" ] && echo 1 >/sys/bus/usb/devices/usb$UB/authorized_default

# ---- tbstream up -cable usb and down, from a -tags usb build run
# directly (it re-runs itself as the two daemons).
utbup() {
  ustop host1 || return 1
  ustop host2 || return 1
  for i in $(seq 50); do [ -d $UG ] || break; sleep 0.2; done
  tbstream-usb -run $URUN up -cable usb:dummy_udc.0 || return 1
  for h in host1 host2; do echo "cmdline $h: $(tr '\000' ' ' </proc/$(cat $URUN/$h/pid)/cmdline)"; done
  head -c 1000000 /bin/busybox >/tmp/utu
  urecv tu
  usend tu || return 1
  uon host2 "head -c 1000000 /dev/tbstream0 > /tmp/utu.recv" &
  r=$!
  uwait_open host2 tbstream0 || return 1
  uon host1 "cat /tmp/utu > /dev/tbstream0"
  wait $r
  cmp /tmp/utu /tmp/utu.recv || return 1
  uclean tu
}
if urun 300 utbup /tmp/utbup.out; then
  ok "usb-tbstream-up: tbstream-usb up -cable usb:dummy_udc.0 paired host1 (gadget) and host2 (libusb), 1 MB /dev/host1/tbstream0 → /dev/host2/tbstream0 identical; $(grep '^cmdline host2' /tmp/utbup.out | cut -c1-120)"
else
  bad "usb-tbstream-up: $(tail -n 4 /tmp/utbup.out | tr '\n' ' ') $(ulogs)"
fi
rm -f /tmp/utu /tmp/utu.recv
utbdown() {
  p1=$(cat $URUN/host1/pid) p2=$(cat $URUN/host2/pid)
  tbstream-usb -run $URUN down || return 1
  grep -q killed /tmp/utbdown.out && { echo "SIGTERM did not stop a daemon"; return 1; }
  ualive "$p1" && { echo "host1 (pid $p1) still runs"; return 1; }
  ualive "$p2" && { echo "host2 (pid $p2) still runs"; return 1; }
  [ -d $UG ] && { echo "$UG left behind"; return 1; }
  return 0
}
if urun 60 utbdown /tmp/utbdown.out; then
  ok "usb-tbstream-down: $(tr '\n' ';' </tmp/utbdown.out) the gadget is gone from configfs"
else
  bad "usb-tbstream-down: $(tail -n 4 /tmp/utbdown.out | tr '\n' ' ')"
fi

# usb-down stops the daemons as usb.sh started them.
ustop host1 >/dev/null
ustop host2 >/dev/null
ustart_host1
ustart_host2
for i in $(seq 100); do [ -d $UG ] && urunning host2 && break; sleep 0.2; done
