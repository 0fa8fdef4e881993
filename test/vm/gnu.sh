#!/bin/sh
# gnu CMD [ARG...] runs the host's CMD (GNU coreutils, tar, gzip, ...) inside
# the VM guest, from the host's root shared read-only over 9p at /host, with
# the host's own loader and libraries: for what busybox cannot do
# (dd iflag=nonblock, status=progress, sha256sum --check of GNU formats...).
cmd=$1
shift
lib=/host/usr/lib/x86_64-linux-gnu
for d in /host/usr/bin /host/usr/sbin; do
  if [ -x "$d/$cmd" ]; then
    exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$d/$cmd" "$@"
  fi
done
echo "gnu: $cmd: not found on the host" >&2
exit 127
