#!/usr/bin/env bash
# Fault suite (test/fault, Go tests behind the `fault` tag): kill -9 of
# each daemon mid-transfer then `tbstream up` with no manual step, down/up
# cycles, a stale pid file naming a stranger, a host that cannot start.
# Every case ends with a sha256-checked transfer. Prints the table of
# (case, figure, verdict) and ends with a `tally:` line (see test/run.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

need unshare util-linux
table=$(mktemp -t tbstream-fault.XXXXXX)
at_exit 'rm -f "$table"'
TBSTREAM_FAULT_TABLE=$table go_tests fault -tags fault -count=1 -timeout 15m ./test/fault
echo "fault table (case | figure | verdict):"
column -t -s $'\t' "$table" 2>/dev/null || cat "$table"
tally
