#!/usr/bin/env bash
# Two engine builds (or settings) compared on the race, in time: both run
# side by side on one Redis (AOF on, one fsync a second), and their races
# alternate, A B, then B A, and so on, each on a new sale of its own (stock
# for every request, one unit per shopper), so that the machine's drift
# falls on both alike. For each race: requests/s, the engine's CPU per
# reserved order (and its user part), Redis's CPU per reserved order, and
# the requests per reserve call (the sale's batches). Then the means and
# the ratios B/A. Instruction counts (`benches/race_cost.sh`,
# `benches/redis_cost.sh`) say what a change takes out; this says what
# that buys in CPU time, where cache misses and the kernel count too.
#
# Every race ends with its oversell check (remaining + reserved + paid ==
# stock_total) and waits until the order services have taken its orders,
# so that the next race's CPU is its own. CPU is read while wrk sends; both
# engines' order services take orders from the one Redis (one consumer
# group), so an engine's figure holds its share of the acceptance, as in
# `benches/http.sh`. A race that fails (its check, a non-2xx answer, orders
# not taken) stops the script with the reason.
#
# With COMMANDS=1 each race also prints where Redis's time went: its
# commands' time (`INFO commandstats`, reset before the race and read once
# the order services took its orders) in µs per reserved order, for the
# commands that took 1% of it or more. A script's `EVALSHA` includes the
# commands it calls, which are listed on their own too.
#
# Run: A_BIN=path B_BIN=path bash benches/race_ab.sh
#      [A_ENV="VAR=value ..."] [B_ENV=...] [ROUNDS=3] [DURATION=6] [COMMANDS=1]
#      [CONNECTIONS=64] [SHOPPERS=300000]
# A_BIN and B_BIN default to target/release/flashsale (then A_ENV/B_ENV
# make the difference). Needs wrk, redis-server, python3, curl; about
# 20 s a race. Traffic goes to 127.0.0.1 only; everything it starts is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
A_BIN=${A_BIN:-target/release/flashsale}
B_BIN=${B_BIN:-target/release/flashsale}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-64}
SHOPPERS=${SHOPPERS:-300000}
ADMIN=bench-admin-token-at-least-32-bytes
SECRET=bench-shopper-secret
STOCK=5000000

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }
[ "$ROUNDS" -ge 1 ] || { echo "ROUNDS must be 1 or more" >&2; exit 1; }
for bin in "$A_BIN" "$B_BIN"; do [ -x "$bin" ] || { echo "no engine at $bin" >&2; exit 1; }; done
. benches/lib.sh
start_redis

declare -A URL PID
for side in A B; do
  port=$(free_port)
  bin=${side}_BIN
  settings=${side}_ENV
  # shellcheck disable=SC2086 # A_ENV and B_ENV are lists of VAR=value words.
  start_engine "${!bin}" "$port" 0 0 0 ${!settings:-}
  PID[$side]=$!
  URL[$side]=http://127.0.0.1:$port
done
for side in A B; do wait_for "${URL[$side]}/readyz"; done
order_script "$SHOPPERS" 1

# race SIDE -> "requests/s engine_us user_us redis_us requests_per_call"
# (run in a process substitution: its exit ends the read below, which set
# -e turns into the script's end).
race() {
  local url=${URL[$1]} pid=${PID[$1]} sale before engine0 user0 redis0 out sale_json
  sale=$(new_sale "$url" "$STOCK" 1)
  [ "${COMMANDS:-0}" = 0 ] || redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
  before=$(orders_accepted "${URL[A]}" "${URL[B]}")
  engine0=$(cpu_ticks "$pid"); user0=$(user_ticks "$pid"); redis0=$(cpu_ticks "$REDIS_PID")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/order.lua" "$url/api/v1/sales/$sale/orders")
  local engine1 user1 redis1
  engine1=$(cpu_ticks "$pid"); user1=$(user_ticks "$pid"); redis1=$(cpu_ticks "$REDIS_PID")
  sale_json=$(curl -fs "$url/admin/v1/sales/$sale" -H "Authorization: Bearer $ADMIN")
  local orders calls
  orders=$(orders_in "$sale_json")
  [ "$orders" -gt 0 ] || { echo "race $1: no order was reserved" >&2; exit 1; }
  calls=$(redis-cli -p "$REDIS_PORT" HGET "fs:{$sale}:stats" batches)
  drained "$before" "$orders" "${URL[A]}" "${URL[B]}" >/dev/null ||
    { echo "race $1: not all $orders orders taken in 120 s" >&2; exit 1; }
  [ "${COMMANDS:-0}" = 0 ] || redis_commands "$1" "$orders" >&2
  python3 - "$sale_json" "$STOCK" "$orders" "${calls:-0}" "$out" \
    $((engine1 - engine0)) $((user1 - user0)) $((redis1 - redis0)) "$TICK_US" <<'PY'
import json, re, sys
stats = json.loads(sys.argv[1])["stats"]
stock, orders, calls, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
engine, user, redis, tick_us = (int(arg) for arg in sys.argv[6:10])
held = stats["reserved"] + stats["paid"]
if not (stats["remaining"] >= 0 and stats["remaining"] + held == stock and held <= stock):
    sys.exit(f"oversell check failed: {stats}")
if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
    sys.exit("the race had non-2xx answers: more requests than shoppers? raise SHOPPERS")
if re.search(r"Socket errors:", out):
    sys.exit("the race had socket errors: " + re.search(r"Socket errors:.*", out).group(0))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
print(rps, engine * tick_us / orders, user * tick_us / orders, redis * tick_us / orders,
      orders / max(calls, 1))
PY
}

# redis_commands SIDE ORDERS: Redis's commands' time per reserved order
# since the race began.
redis_commands() {
  redis-cli -p "$REDIS_PORT" INFO commandstats | python3 -c '
import re, sys
side, orders = sys.argv[1], int(sys.argv[2])
usec = {m.group(1): int(m.group(2))
        for m in re.finditer(r"cmdstat_(\S+?):calls=\d+,usec=(\d+)", sys.stdin.read())}
total = sum(usec.values()) - usec.get("evalsha", 0)
top = sorted(((t, name) for name, t in usec.items() if t >= total / 100), reverse=True)
print(f"{side} Redis commands, us per reserved order:",
      ", ".join(f"{name} {t / orders:.2f}" for t, name in top))
' "$1" "$2"
}

declare -A SUMS
for round in $(seq "$ROUNDS"); do
  order="A B"
  [ $((round % 2)) = 1 ] || order="B A"
  for side in $order; do
    read -r rps engine_us user_us redis_us per_call < <(race "$side")
    printf '%s round %d: %8.0f req/s  engine %5.2f us a reserved order (user %5.2f)  redis %5.2f us  %4.1f requests a reserve call\n' \
      "$side" "$round" "$rps" "$engine_us" "$user_us" "$redis_us" "$per_call"
    SUMS[$side]="${SUMS[$side]:-} $rps,$engine_us,$user_us,$redis_us"
  done
done
python3 - "${SUMS[A]}" "${SUMS[B]}" "$A_BIN ${A_ENV:-}" "$B_BIN ${B_ENV:-}" <<'PY'
import sys
def means(text):
    rows = [tuple(map(float, race.split(","))) for race in text.split()]
    return [sum(column) / len(rows) for column in zip(*rows)]
a, b = means(sys.argv[1]), means(sys.argv[2])
for name, x in (("A", a), ("B", b)):
    label = sys.argv[3] if name == "A" else sys.argv[4]
    print(f"{name} ({label.strip()}): means {x[0]:.0f} req/s, engine {x[1]:.2f} us (user {x[2]:.2f}), redis {x[3]:.2f} us")
print(f"B against A: requests/s {b[0] / a[0]:.2f}x, engine CPU per reserved order {b[1] / a[1]:.2f}x, "
      f"redis CPU per reserved order {b[3] / a[3]:.2f}x")
PY
