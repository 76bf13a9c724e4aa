# shellcheck shell=bash
# Helpers sourced by the h2load-*.sh scripts: build a gRPC request body for a
# message whose only set field is field 1 (bytes or string), then run h2load.
#
# Environment:
#   LAUREL_ADDR      server base URL          (default http://127.0.0.1:50051)
#   LAUREL_PROGRAM   x-laurel-program header  (default "default")
#   LAUREL_API_KEY   x-api-key header, sent only when set
#   H2LOAD_N / H2LOAD_C / H2LOAD_M / H2LOAD_T  h2load -n -c -m -t
#                    (defaults 200000 / 50 / 10 / 2)

set -euo pipefail

# Prints the escapes (\xNN) of the bytes of unsigned integer $1 as a protobuf varint.
varint_escapes() {
  local n=$1 out=""
  while ((n >= 0x80)); do
    out+=$(printf '\\x%02x' $(((n & 0x7f) | 0x80)))
    n=$((n >> 7))
  done
  out+=$(printf '\\x%02x' "$n")
  printf '%s' "$out"
}

# Writes to file $2 one gRPC frame: flag 0, 4-byte big-endian length, then a
# protobuf message with field 1 (wire type 2, tag byte 0x0a) holding $1.
write_field1_frame() {
  local value=$1 file=$2 msg len
  local LC_ALL=C # ${#value} counts bytes, not characters
  msg=$(mktemp)
  {
    printf '\x0a'
    # shellcheck disable=SC2059 # the format is our own escapes
    printf "$(varint_escapes "${#value}")"
    printf '%s' "$value"
  } >"$msg"
  len=$(wc -c <"$msg")
  {
    # shellcheck disable=SC2059
    printf "\\x00$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' \
      $(((len >> 24) & 255)) $(((len >> 16) & 255)) $(((len >> 8) & 255)) $((len & 255)))"
    cat "$msg"
  } >"$file"
  rm -f "$msg"
}

# Runs h2load against gRPC method $1 (e.g. /laurel.common.v1.EchoService/Echo)
# with request body file $2; further arguments go to h2load.
run_h2load() {
  local method=$1 body=$2
  shift 2
  if ! command -v h2load >/dev/null 2>&1; then
    echo "h2load not found: apt-get install nghttp2-client" >&2
    exit 1
  fi
  local addr=${LAUREL_ADDR:-http://127.0.0.1:50051}
  local headers=(
    -H 'content-type: application/grpc'
    -H 'te: trailers'
    -H "x-laurel-program: ${LAUREL_PROGRAM:-default}"
  )
  if [[ -n ${LAUREL_API_KEY:-} ]]; then
    headers+=(-H "x-api-key: ${LAUREL_API_KEY}")
  fi
  # h2load counts HTTP 200 as success, but gRPC reports failures in the
  # grpc-status trailer; check one call first so errors do not pass as speed.
  if command -v curl >/dev/null 2>&1; then
    local status
    status=$(curl -sS --http2-prior-knowledge --max-time 5 -o /dev/null -D - \
      --data-binary "@$body" "${headers[@]}" "${addr%/}$method" |
      tr -d '\r' | awk -F': ' 'tolower($1) == "grpc-status" { print $2 }' | tail -n1)
    if [[ ${status:-} != 0 ]]; then
      echo "warning: a single call answered grpc-status=${status:-<none>}; h2load would count such failures as successes" >&2
    fi
  fi
  h2load -n "${H2LOAD_N:-200000}" -c "${H2LOAD_C:-50}" -m "${H2LOAD_M:-10}" -t "${H2LOAD_T:-2}" \
    -d "$body" "${headers[@]}" "$@" "${addr%/}$method"
}
