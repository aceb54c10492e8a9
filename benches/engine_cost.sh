#!/usr/bin/env bash
# The engine's own work per sold-out order request over HTTP, counted in
# instructions rather than seconds: the release engine (embedded store,
# rate limits off) runs under valgrind's callgrind, a sale of one unit is
# sold, then 1,000 shoppers' order requests (distinct tokens) are sent on
# one kept-alive connection, and then the same 1,000 tokens again (a
# shopper retrying). `callgrind_control -d` dumps the counts around each
# pass, so each figure is the pass's instructions (and calls into the
# allocator) over its 1,000 requests: hyper, the layers, the token check,
# the JSON, the metrics, in every thread of the engine. Counts repeat run
# after run whatever else the machine runs. Caveat: under valgrind SHA-256
# takes its portable path, not the CPU's SHA instructions, so the token
# check weighs more here than on the machine.
#
# Run: bash benches/engine_cost.sh [ENGINE_BIN] [VAR=value...]
#      e.g. bash benches/engine_cost.sh target/release/flashsale FLASHSALE_USER_TOKEN_CACHE=0
# Needs valgrind, python3, curl; about 40 s. Traffic goes to 127.0.0.1
# only; the engine it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
BIN=${1:-target/release/flashsale}
shift || true
[ -x "$BIN" ] || cargo build --release --quiet --bin flashsale
ADMIN=bench-admin-token-at-least-32-bytes
SECRET=bench-shopper-secret
. benches/lib.sh
PORT=$(free_port)
env "$@" FLASHSALE_ADMIN_TOKEN=$ADMIN FLASHSALE_USER_TOKEN_SECRET=$SECRET \
  FLASHSALE_PAYMENTS=simulated FLASHSALE_RATE_GLOBAL_PER_SEC=0 FLASHSALE_RATE_USER_PER_SEC=0 \
  FLASHSALE_RATE_IP_PER_SEC=0 RUST_LOG=warn \
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" --listen "127.0.0.1:$PORT" \
  >"$WORK/log" 2>&1 &
ENGINE=$!
PIDS+=($ENGINE)
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.5; done

python3 - "$PORT" "$ADMIN" "$SECRET" <<'PY'
import http.client, subprocess, sys, time
sys.path.insert(0, "benches")
import shop
port, admin, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
token = lambda i: shop.token(secret, i)
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
path = shop.new_sale(connection, admin, stock=1)
def order(token):
    connection.request("POST", path, '{"quantity":1}',
                       {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    answer = connection.getresponse()
    answer.read()
    return answer.status
assert order(token(-1)) == 201
# Warm-up: metric series, the sale's actor learning it is sold out.
for i in range(-50, -2):
    assert order(token(i)) == 409
tokens = [token(i) for i in range(1000)]
def dump():
    subprocess.run(["callgrind_control", "-d"], check=True, capture_output=True)
    time.sleep(1)
dump()
for t in tokens:
    assert order(t) == 409
dump()
for t in tokens:
    assert order(t) == 409
dump()
PY
kill -TERM "$ENGINE"; wait "$ENGINE" 2>/dev/null || true
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
# Dump 1 is start-up and warm-up, 2 the new tokens, 3 the same tokens again.
echo "$BIN $*: sold-out order request, $(( $(total "$WORK/cg.out.2") / 1000 )) instructions" \
  "and $(allocator_calls "$WORK/cg.out.2" 1000) allocator calls (new tokens)," \
  "$(( $(total "$WORK/cg.out.3") / 1000 )) and $(allocator_calls "$WORK/cg.out.3" 1000) (the same tokens again)"
