#!/usr/bin/env bash
# Load MemberService.GetMember for one existing member with h2load.
#
# Usage: deploy/bench/h2load-get-member.sh MEMBER_ID [extra h2load args]
# Environment: LAUREL_ADDR, LAUREL_PROGRAM, LAUREL_API_KEY, H2LOAD_N/C/M/T
# (see grpc-frame.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=grpc-frame.sh
. "$here/grpc-frame.sh"

if [[ $# -lt 1 || -z $1 ]]; then
  echo "usage: $0 MEMBER_ID [extra h2load args]" >&2
  exit 2
fi
member_id=$1
shift

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# GetMemberRequest { string member_id = 1; }
write_field1_frame "$member_id" "$tmp/req.bin"
run_h2load /laurel.member.v1.MemberService/GetMember "$tmp/req.bin" "$@"
