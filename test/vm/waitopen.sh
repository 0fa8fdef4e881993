#!/bin/sh
# wait-open RUN HOST NODE: wait (up to 120 s) until HOST's stream on NODE,
# of the hosts under the run directory RUN, is open: column OPEN of
# tbstream list. (In a tbstream shell the node is /dev/NODE, so
# /proc/PID/fd cannot tell the hosts apart.)
#
# The checks start a writer once its reader has the node open. As on Linux,
# data moves only while both ends are open: a writer's last close gives up
# on bytes nobody reads for 500 ms, and under TCG a reader's shell can
# start later than a small writer's whole run.
run=$1 host=$2 node=$3
for i in $(seq 240); do
  timeout 10 tbstream -run "$run" list 2>/dev/null | awk -v h="$host" -v n="$node" '
    /^Host / { cur = $2 }
    cur == h && ($3 == n || $3 ~ "/" n "$") && $8 >= 1 { found = 1 }
    END { exit !found }' && exit 0
  sleep 0.5
done
echo "wait-open: $host's $node not open after 120 s: $(tbstream -run "$run" list 2>&1 | tr '\n' '|')"
exit 1
