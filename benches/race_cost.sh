#!/usr/bin/env bash
# The engine's own work per reserved order on Redis, counted in
# instructions rather than seconds: the release engine (rate limits off)
# runs under valgrind's callgrind against a local redis-server (AOF on,
# appendfsync everysec), and 32 clients, each on its own kept-alive
# connection, order one unit each for 1,920 new shoppers in a sale with
# stock for all (the race of `benches/http.sh`, slowed down: under
# callgrind the actor's batches form as they do at full speed). After the
# last answer the order service is given a few seconds to accept every
# order, so the figure covers a reserved order's whole life in the engine:
# hyper, the front door, the token check, the actor, the Redis client's
# encoding and parsing, the 201's body, the order service's acceptance and
# its indexes. `callgrind_control -d` dumps the counts after a warm-up and
# after the orders; the second dump over the 1,920 orders is the figure,
# with the calls into the allocator over the same orders (allocator calls per
# reserved order).
# Caveat: under valgrind SHA-256 takes its portable path (see
# `benches/engine_cost.sh`).
#
# Run: bash benches/race_cost.sh [ENGINE_BIN] [CALLGRIND_OUT]
#      (CALLGRIND_OUT keeps the counts, for `callgrind_annotate --inclusive=yes`)
# Needs valgrind, redis-server, python3, curl; about 20 s. Traffic goes to
# 127.0.0.1 only; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }
BIN=${1:-target/release/flashsale}
KEEP=${2:-}
[ -x "$BIN" ] || cargo build --release --quiet --bin flashsale
ADMIN=bench-admin-token-at-least-32-bytes
SECRET=bench-shopper-secret
ORDERS=1920
. benches/lib.sh
start_redis
PORT=$(free_port)
# Timeouts far above what callgrind's slowness needs.
FLASHSALE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/ FLASHSALE_REDIS_DURABILITY=warn \
  FLASHSALE_ADMIN_TOKEN=$ADMIN FLASHSALE_USER_TOKEN_SECRET=$SECRET FLASHSALE_PAYMENTS=simulated \
  FLASHSALE_RATE_GLOBAL_PER_SEC=0 FLASHSALE_RATE_USER_PER_SEC=0 FLASHSALE_RATE_IP_PER_SEC=0 \
  FLASHSALE_REQUEST_TIMEOUT_MS=60000 FLASHSALE_RESERVE_TIMEOUT_MS=60000 FLASHSALE_STORE_TIMEOUT_MS=60000 \
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" \
  --listen "127.0.0.1:$PORT" >"$WORK/log" 2>&1 &
ENGINE=$!
PIDS+=($ENGINE)
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.5; done

python3 - "$PORT" "$ADMIN" "$SECRET" "$ORDERS" <<'PY'
import http.client, subprocess, sys, threading, time
sys.path.insert(0, "benches")
import shop
port, admin, secret, orders = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
CLIENTS = 32
token = lambda i: shop.token(secret, i)
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
path = shop.new_sale(connection, admin, stock=1000000)
def client(tokens):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for t in tokens:
        conn.request("POST", path, '{"quantity":1}',
                     {"Authorization": f"Bearer {t}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 201, answer.status
def race(first, count):
    per = count // CLIENTS
    threads = [threading.Thread(target=client, args=([token(first + k * per + i) for i in range(per)],))
               for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
def dump():
    subprocess.run(["callgrind_control", "-d"], check=True, capture_output=True)
    time.sleep(1)
# Warm-up: the sale's actor, the order service's watch, metric series.
race(-10 * CLIENTS, 10 * CLIENTS)
time.sleep(3)
dump()
race(0, orders)
time.sleep(4)
dump()
PY
kill -TERM "$ENGINE"; wait "$ENGINE" 2>/dev/null || true
[ -z "$KEEP" ] || cp "$WORK/cg.out.2" "$KEEP"
echo "$BIN: $(( $(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.out.2") / ORDERS ))" \
  "instructions and $(allocator_calls "$WORK/cg.out.2" "$ORDERS") allocator calls per reserved order" \
  "($ORDERS orders, 32 clients at once, Redis store)"
