#!/usr/bin/env bash
# Load EchoService.Echo with h2load: the floor every Laurel path is compared to.
#
# Usage: deploy/bench/h2load-echo.sh [extra h2load args]
# Environment: LAUREL_ADDR, LAUREL_PROGRAM, LAUREL_API_KEY, H2LOAD_N/C/M/T
# (see grpc-frame.sh). ECHO_PAYLOAD sets the payload (default "ping").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=grpc-frame.sh
. "$here/grpc-frame.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# EchoRequest { bytes payload = 1; }  ->  00 00000006 0a 04 "ping"
write_field1_frame "${ECHO_PAYLOAD:-ping}" "$tmp/req.bin"
run_h2load /laurel.common.v1.EchoService/Echo "$tmp/req.bin" "$@"
