#!/bin/bash
# discover.sh: what a tool written for the Linux 7.2 driver does before and
# while it moves data, run inside `tbstream shell HOST` (or on a
# kernel with thunderbolt_stream):
#
#     host1 (0-503 seen from host2)              host2 (0-1 seen from host1)
#   +--------------------------------+  cable  +--------------------------------+
#   | discover.sh send NAME FILE     |=========| discover.sh recv NAME OUT      |
#   |   /dev/tbstream$index  <-------+---------+----->  /dev/tbstream$index     |
#   +--------------------------------+         +--------------------------------+
#
#   1. modprobe thunderbolt_stream (under set -e), check /sys/module/thunderbolt_stream;
#   2. find the service whose key is "stream" and whose driver is thunderbolt_stream
#      in /sys/bus/thunderbolt/devices, and take its name as the configfs group;
#   3. read who is on the other end from the XDomain's directory;
#   4. mkdir -p the stream, ring_size and throttling before the HopIDs, -1 to both,
#      read index, and check /dev/tbstream$index, 600 root:root (a character device on Linux; the
#      FUSE fallback serves a regular file: TBSTREAM_REQUIRE_CHR=1 insists);
#   5. read every attribute of every stream and report it;
# then send FILE (send) or receive into OUT (recv), print its sha256, and remove
# the stream (rmdir -p).
#
# Usage: discover.sh send|recv NAME FILE [RING_SIZE THROTTLING]
# (bash; busybox sh would run its own modprobe applet, not the shell's)
set -euo pipefail

role=$1 name=$2 file=$3 ring=${4:-128} throttling=${5:-4096}
case $role in send|recv) ;; *) echo "discover.sh: role send or recv, not $role" >&2; exit 2;; esac

modprobe thunderbolt_stream
[ "$(cat /sys/module/thunderbolt_stream/initstate)" = live ]

svc=
for key in /sys/bus/thunderbolt/devices/*/key; do
	dir=${key%/key}
	[ "$(cat "$key")" = stream ] || continue
	[ -L "$dir/driver" ] || continue
	[ "$(basename "$(readlink "$dir/driver")")" = thunderbolt_stream ] || continue
	svc=${dir##*/}
	break
done
if [ -z "$svc" ]; then
	echo "discover.sh: no stream service bound to thunderbolt_stream in /sys/bus/thunderbolt/devices" >&2
	exit 1
fi
xd=/sys/bus/thunderbolt/devices/${svc%.*}
# One read per file, each checked by set -e (which does not see a failed
# $(...) inside another command's arguments).
modalias=$(cat "/sys/bus/thunderbolt/devices/$svc/modalias")
vendor_name=$(cat "$xd/vendor_name")
device_name=$(cat "$xd/device_name")
vendor=$(cat "$xd/vendor")
device=$(cat "$xd/device")
unique_id=$(cat "$xd/unique_id")
maxhopid=$(cat "$xd/maxhopid")
rx_lanes=$(cat "$xd/rx_lanes")
rx_speed=$(cat "$xd/rx_speed")
tx_lanes=$(cat "$xd/tx_lanes")
tx_speed=$(cat "$xd/tx_speed")
echo "service $svc: $modalias"
echo "peer: $vendor_name $device_name ($vendor/$device), uuid $unique_id, maxhopid $maxhopid"
echo "link: rx $rx_lanes x $rx_speed, tx $tx_lanes x $tx_speed"

cfg=/sys/kernel/config/thunderbolt/stream
st=$cfg/$svc/$name
mkdir -p "$st"
echo "$ring" > "$st/ring_size"
echo "$throttling" > "$st/throttling"
echo -1 > "$st/in_hopid"
echo -1 > "$st/out_hopid"
index=$(cat "$st/index")
dev=/dev/tbstream$index
if [ "${TBSTREAM_REQUIRE_CHR:-0}" = 1 ]; then
	[ -c "$dev" ] || { echo "discover.sh: $dev is not a character device" >&2; exit 1; }
else
	[ -c "$dev" ] || [ -f "$dev" ] || { echo "discover.sh: no $dev" >&2; exit 1; }
fi
own=$(stat -L -c %a:%u:%g "$dev")
[ "$own" = 600:0:0 ] || { echo "discover.sh: $dev has mode:uid:gid $own, want 600:0:0" >&2; exit 1; }
echo "device $dev"

for attr in "$cfg"/*/*/*; do
	echo "${attr#$cfg/}=$(cat "$attr")"
done

# The peer's HopIDs reach this host a moment after its echo: until they
# have, an open fails with EINVAL, as on Linux.
for i in $(seq 400); do
	[ "$(cat "$st/in_hopid")" -gt 0 ] && [ "$(cat "$st/out_hopid")" -gt 0 ] && break
	sleep 0.05
done
if [ "$role" = send ]; then
	cat "$file" > "$dev"
	echo "sent $(sha256sum < "$file" | cut -d' ' -f1)"
else
	cat "$dev" > "$file"
	echo "received $(sha256sum < "$file" | cut -d' ' -f1)"
fi
cd "$cfg" && rmdir -p "$svc/$name"
