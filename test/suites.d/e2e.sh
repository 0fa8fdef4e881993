#!/usr/bin/env bash
# End-to-end suite on the host: two emulated hosts (tbstream up) with the FUSE
# fallback devices, the kernel documentation's command lines run verbatim in
# `tbstream shell` (test/e2e, Go tests with real dd, tar, gzip, sha256sum and
# gst-launch-1.0). Installs what they use. Prints results and ends with a
# `tally:` line (see test/run.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/lib.sh

need gst-launch-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
need unshare util-linux
need gunzip gzip

go_tests e2e -tags e2e -count=1 -timeout 20m ./test/e2e

tally
