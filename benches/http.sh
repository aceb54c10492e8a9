#!/usr/bin/env bash
# Same-run HTTP benchmark: a trivial axum endpoint (the ceiling of the HTTP
# stack on this machine), the seckill page of a 12-item campaign (`GET
# /api/v1/campaigns/{id}` without a token, as a CDN or a countdown asks
# for it), the order route during a race, the order route
# after sell-out, that route again on a second engine with every rate
# limit on (set never to refuse: the limiters' cost), and the same requests
# to a bare route of the ceiling's answering the same 409 (the order
# route's floor on this stack), and the trivial endpoint again, each driven
# by wrk with the same threads and connections, one after the other in one
# run, against a release build on a local redis-server (AOF on, appendfsync
# everysec). Prints requests/s, p50/p99 latency and the ratio to the
# ceiling (the mean of its two phases, which bracket the others: a shared
# machine's speed drifts over a run), then checks the race sold
# no more than its stock. Traffic goes to 127.0.0.1 only; everything it
# starts is stopped on exit. For every phase it also prints the CPU the
# serving process (and redis-server) used per request, in microseconds:
# user + system time from /proc/<pid>/stat over the phase (and the user
# time alone: the rest is the kernel's socket work), divided by the
# requests wrk completed; unlike requests/s this hardly depends on what
# else the machine runs. And the serving process's context switches per
# request (every thread's, from /proc/<pid>/task/*/status): how often its
# threads slept and were woken, or were preempted. And wrk's own CPU per
# request (its user + system time, from the shell's `times`): the load
# generator shares the two cores with what it measures. A phase in which
# wrk lost answers (socket errors, or a race whose sale holds more orders
# than the answers wrk read, past the requests in flight when it stopped)
# is named below the table: its row is not comparable.
#
# Run: bash benches/http.sh          (needs wrk: apt-get install wrk)
# Knobs: DURATION (seconds per run, 8), CONNECTIONS (64), THREADS (1),
#        SHOPPERS (distinct shoppers' tokens, 300000: more than one race
#        run sends, so every race request is a shopper's first order),
#        ENGINE_BIN (the engine binary to measure, target/release/flashsale:
#        an A/B compares two builds in alternating runs), CEILING_BIN (the
#        ceiling's and the floor's server, target/release/examples/http_ceiling:
#        built with the engine's profile, so a build setting's A/B moves both),
#        LAYOUT_B ("VAR=value ...": a third engine with these settings, say
#        "TOKIO_WORKER_THREADS=1 FLASHSALE_ACTOR_ARBITERS=2", races on a
#        sale of its own right after the first engine's race: two thread
#        layouts compared in one run, each race with its oversell check),
#        PERF_PHASE (race, sold_out, ...: records the serving process with
#        `perf record -g` during that phase into PERF_OUT, perf.data by
#        default; `perf report -i PERF_OUT --sort comm,dso` then says which
#        thread and library the time went to).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SHOPPERS=${SHOPPERS:-300000}
ENGINE_BIN=${ENGINE_BIN:-target/release/flashsale}
CEILING_BIN=${CEILING_BIN:-target/release/examples/http_ceiling}
ADMIN=bench-admin-token-at-least-32-bytes
SECRET=bench-shopper-secret

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }

# An A/B of prebuilt engines (ENGINE_BIN, and CEILING_BIN for a build
# setting's A/B) may skip the build: NO_BUILD=1.
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin flashsale --example http_ceiling
. benches/lib.sh
start_redis

# engine PORT GLOBAL USER IP [VAR=value...]: an engine of ENGINE_BIN on the
# shared Redis (see start_engine).
engine() { start_engine "$ENGINE_BIN" "$@"; }
# The measured engine runs unthrottled (one address sends everything). A
# second engine has every rate limit on, set high enough never to refuse
# this traffic, to price the limiter layers on the same route.
ENGINE_PORT=$(free_port)
ENGINE=http://127.0.0.1:$ENGINE_PORT
engine "$ENGINE_PORT" 0 0 0
ENGINE_PID=$!
LIMITED_PORT=$(free_port)
LIMITED=http://127.0.0.1:$LIMITED_PORT
engine "$LIMITED_PORT" 10000000 1000 10000000
LIMITED_PID=$!
if [ -n "${LAYOUT_B:-}" ]; then
  LAYOUT_PORT=$(free_port)
  LAYOUT=http://127.0.0.1:$LAYOUT_PORT
  # shellcheck disable=SC2086 # LAYOUT_B is a list of VAR=value words.
  engine "$LAYOUT_PORT" 0 0 0 $LAYOUT_B
  LAYOUT_PID=$!
fi
CEILING_PORT=$(free_port)
"$CEILING_BIN" "127.0.0.1:$CEILING_PORT" >/dev/null &
CEILING_PID=$!
PIDS+=($!)
wait_for "$ENGINE/readyz"
wait_for "$LIMITED/readyz"
[ -z "${LAYOUT_B:-}" ] || wait_for "$LAYOUT/readyz"
wait_for "http://127.0.0.1:$CEILING_PORT/"
# The floor's route must answer as the sold-out route does (a 404 or 405
# would be as uncounted by wrk, and far cheaper).
FLOOR_STATUS=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"quantity":1}' \
  "http://127.0.0.1:$CEILING_PORT/api/v1/sales/floor/orders")
[ "$FLOOR_STATUS" = 409 ] || { echo "the floor route answered $FLOOR_STATUS, not 409" >&2; exit 1; }

# A campaign of 12 items, its first round live and a second to come: the
# page every waiting shopper polls.
new_campaign() { # -> campaign id
  python3 - "$(date -u +%s)" <<'PY' |
import datetime, json, sys
at = lambda secs: datetime.datetime.fromtimestamp(int(sys.argv[1]) + secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({
    "title": "bench", "per_user_limit_per_round": 1, "per_user_limit_total": 2,
    "rounds": [{"starts_at": at(-1), "ends_at": at(3600)}, {"starts_at": at(7200), "ends_at": at(10800)}],
    "items": [{"sku": f"BENCH-{i}", "title": f"bench item {i}", "price_cents": 990,
               "original_price_cents": 1990, "stock_per_round": 100} for i in range(12)],
}))
PY
  curl -fs -X POST "$ENGINE/admin/v1/campaigns" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d @- |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
CAMPAIGN=$(new_campaign)
RACE_STOCK=5000000
RACE=$(new_sale "$ENGINE" "$RACE_STOCK" 1)
SOLD=$(new_sale "$ENGINE" 1 1)
[ -z "${LAYOUT_B:-}" ] || RACE_B=$(new_sale "$LAYOUT" "$RACE_STOCK" 1)

order_script "$SHOPPERS" "$THREADS"
curl -fs -o /dev/null -X POST "$ENGINE/api/v1/sales/$SOLD/orders" \
  -H "Authorization: Bearer $(FLASHSALE_USER_TOKEN_SECRET=$SECRET target/release/flashsale token --sub last-unit)"

# Context switches of all a process's threads so far (voluntary: it slept
# and was woken; the rest: preempted), from /proc.
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }

# run NAME URL SERVER_PID [script] -> "rps p50_ms p99_ms non2xx
# server_us_per_request redis_us_per_request server_switches_per_request
# server_user_us_per_request wrk_us_per_request": wrk's figures, the CPU the
# serving process and redis-server used per completed request, the serving
# process's context switches per request, its CPU in user space per
# request, and wrk's own CPU per request.
run() {
  local out server0 redis0 server1 redis1
  server0=$(cpu_ticks "$3"); redis0=$(cpu_ticks "$REDIS_PID"); switches0=$(switches "$3")
  user0=$(user_ticks "$3")
  if [ "${PERF_PHASE:-}" = "$1" ]; then
    perf record -q -g -F 997 -p "$3" -o "${PERF_OUT:-perf.data}" -- sleep "$DURATION" >/dev/null 2>&1 &
  fi
  # `times` in the substitution's shell: its children's (wrk's) CPU, last line.
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency ${4:+-s "$4"} "$2" && times)
  server1=$(cpu_ticks "$3"); redis1=$(cpu_ticks "$REDIS_PID"); switches1=$(switches "$3")
  user1=$(user_ticks "$3")
  echo "$out" >"$WORK/$1.txt"
  python3 - "$WORK/$1.txt" $((server1 - server0)) $((redis1 - redis0)) "$TICK_US" $((switches1 - switches0)) \
    $((user1 - user0)) <<'PY'
import re, sys
text = open(sys.argv[1]).read()
server_ticks, redis_ticks, tick_us, switches, user_ticks = (int(arg) for arg in sys.argv[2:7])
def ms(label):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % label, text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
requests = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
# `times` writes seconds with the locale's decimal separator.
wrk_secs = sum(int(m) * 60 + float(s.replace(",", "."))
               for m, s in re.findall(r"(\d+)m([\d.,]+)s", text.splitlines()[-1]))
print(rps, ms("50"), ms("99"), non2xx.group(1) if non2xx else 0,
      server_ticks * tick_us / requests, redis_ticks * tick_us / requests, switches / requests,
      user_ticks * tick_us / requests, wrk_secs * 1e6 / requests)
PY
}

read -r CEIL_RPS CEIL_P50 CEIL_P99 _ CEIL_US _ CEIL_SW CEIL_USR CEIL_WRK < <(run ceiling "http://127.0.0.1:$CEILING_PORT/" "$CEILING_PID")
read -r PAGE_RPS PAGE_P50 PAGE_P99 PAGE_NON2XX PAGE_US PAGE_REDIS_US PAGE_SW PAGE_USR PAGE_WRK < <(run campaign_page "$ENGINE/api/v1/campaigns/$CAMPAIGN" "$ENGINE_PID")
# Every engine's order service takes orders from the same Redis (one
# consumer group), so a race's orders are taken by all of them, after their
# answers: a phase after a race waits until they are (and says how long that
# took), so that its CPU per request is its own. The race's own row counts
# only its engine's share of that work.
ENGINES=("$ENGINE" "$LIMITED" ${LAYOUT_B:+"$LAYOUT"})
ACCEPTED=$(orders_accepted "${ENGINES[@]}")
read -r RACE_RPS RACE_P50 RACE_P99 RACE_NON2XX RACE_US RACE_REDIS_US RACE_SW RACE_USR RACE_WRK < <(run race "$ENGINE/api/v1/sales/$RACE/orders" "$ENGINE_PID" "$WORK/order.lua")
RACE_ORDERS=$(orders_in "$(curl -fs "$ENGINE/admin/v1/sales/$RACE" -H "Authorization: Bearer $ADMIN")")
DRAINED=$(drained "$ACCEPTED" "$RACE_ORDERS" "${ENGINES[@]}") || DRAINED="over 120 s (not all taken)"
if [ -n "${LAYOUT_B:-}" ]; then
  ACCEPTED=$(orders_accepted "${ENGINES[@]}")
  read -r B_RPS B_P50 B_P99 B_NON2XX B_US B_REDIS_US B_SW B_USR B_WRK < <(run race_b "$LAYOUT/api/v1/sales/$RACE_B/orders" "$LAYOUT_PID" "$WORK/order.lua")
  STATS_B=$(curl -fs "$LAYOUT/admin/v1/sales/$RACE_B" -H "Authorization: Bearer $ADMIN")
  DRAINED_B=$(drained "$ACCEPTED" "$(orders_in "$STATS_B")" "${ENGINES[@]}") ||
    DRAINED_B="over 120 s (not all taken)"
fi
read -r SOLD_RPS SOLD_P50 SOLD_P99 _ SOLD_US SOLD_REDIS_US SOLD_SW SOLD_USR SOLD_WRK < <(run sold_out "$ENGINE/api/v1/sales/$SOLD/orders" "$ENGINE_PID" "$WORK/order.lua")
read -r LIM_RPS LIM_P50 LIM_P99 _ LIM_US LIM_REDIS_US LIM_SW LIM_USR LIM_WRK < <(run sold_out_limited "$LIMITED/api/v1/sales/$SOLD/orders" "$LIMITED_PID" "$WORK/order.lua")
# The order route's floor on this stack: the same requests (wrk's script
# too) to a bare route of the ceiling's answering the same 409.
read -r FLOOR_RPS FLOOR_P50 FLOOR_P99 _ FLOOR_US _ FLOOR_SW FLOOR_USR FLOOR_WRK < <(run floor "http://127.0.0.1:$CEILING_PORT/api/v1/sales/$SOLD/orders" "$CEILING_PID" "$WORK/order.lua")
# The ceiling again, last: the machine's speed drifts over a run (a shared
# machine's neighbours come and go), so the ratios are to the mean of the
# two ceiling phases, which bracket every other phase.
read -r CEIL2_RPS CEIL2_P50 CEIL2_P99 _ CEIL2_US _ CEIL2_SW CEIL2_USR CEIL2_WRK < <(run ceiling_again "http://127.0.0.1:$CEILING_PORT/" "$CEILING_PID")
# Priced only if the limiters never refused: none counted on the engine.
LIM_REFUSED=$(curl -fs "$LIMITED/metrics" | awk '/^flashsale_rate_limited_total/ {n += $2} END {print n + 0}')

STATS=$(curl -fs "$ENGINE/admin/v1/sales/$RACE" -H "Authorization: Bearer $ADMIN")
python3 - "$STATS" "$RACE_STOCK" "${STATS_B:-}" <<PY
import json, re, sys
rows_b = [
    ("  the race again, LAYOUT_B", ${B_RPS:-0}, ${B_P50:-0}, ${B_P99:-0}, ${B_US:-0}, ${B_REDIS_US:-0}, ${B_SW:-0}, ${B_USR:-0}, ${B_WRK:-0}),
] if sys.argv[3] else []
rows = [
    ("trivial axum endpoint (ceiling)", $CEIL_RPS, $CEIL_P50, $CEIL_P99, $CEIL_US, 0, $CEIL_SW, $CEIL_USR, $CEIL_WRK),
    ("campaign page, 12 items x 2 rounds", $PAGE_RPS, $PAGE_P50, $PAGE_P99, $PAGE_US, $PAGE_REDIS_US, $PAGE_SW, $PAGE_USR, $PAGE_WRK),
    ("order route during the race", $RACE_RPS, $RACE_P50, $RACE_P99, $RACE_US, $RACE_REDIS_US, $RACE_SW, $RACE_USR, $RACE_WRK),
    *rows_b,
    ("order route after sell-out", $SOLD_RPS, $SOLD_P50, $SOLD_P99, $SOLD_US, $SOLD_REDIS_US, $SOLD_SW, $SOLD_USR, $SOLD_WRK),
    ("  the same, every rate limit on", $LIM_RPS, $LIM_P50, $LIM_P99, $LIM_US, $LIM_REDIS_US, $LIM_SW, $LIM_USR, $LIM_WRK),
    ("bare route, same requests (floor)", $FLOOR_RPS, $FLOOR_P50, $FLOOR_P99, $FLOOR_US, 0, $FLOOR_SW, $FLOOR_USR, $FLOOR_WRK),
    ("trivial axum endpoint again, last", $CEIL2_RPS, $CEIL2_P50, $CEIL2_P99, $CEIL2_US, 0, $CEIL2_SW, $CEIL2_USR, $CEIL2_WRK),
]
# The baseline: the mean of the two ceiling phases, requests/s and CPU.
base_rps, base_us = (rows[0][1] + rows[-1][1]) / 2, (rows[0][4] + rows[-1][4]) / 2
print(f"wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, one after the other, same run")
print(f"{'':34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs ceiling':>10} "
      f"{'server us/req':>13} {'of it user':>10} {'redis us/req':>12} {'switches/req':>12} {'wrk us/req':>10}")
for name, rps, p50, p99, us, redis_us, switches, user_us, wrk_us in rows:
    print(f"{name:34} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {rps / base_rps:>9.2f}x "
          f"{us:>13.1f} {user_us:>10.1f} {redis_us:>12.1f} {switches:>12.3f} {wrk_us:>10.1f}")
print("server us/req: CPU (user + system) of the answering process per request "
      "(the ceiling's own process for its row), of it user: in user space (the rest is "
      "the kernel's); switches/req: its threads' context switches per request; wrk us/req: "
      "wrk's own CPU per request; vs ceiling: to the mean of the two ceiling phases "
      f"({base_rps:.0f} req/s, {base_us:.1f} us/req; the last read {rows[-1][1] / rows[0][1]:.2f}x "
      f"the first's requests/s, {rows[-1][4] / rows[0][4]:.2f}x its CPU per request); "
      f"sold-out vs ceiling: {rows[3 + len(rows_b)][4] / base_us:.2f}x CPU per request")
sold, floor = rows[3 + len(rows_b)], rows[-2]
print(f"sold out against the floor (the same requests to a bare route of the ceiling's): "
      f"{sold[1] / floor[1]:.2f}x requests/s, {sold[4] / floor[4]:.2f}x CPU per request; "
      f"the floor against the ceiling: {floor[1] / base_rps:.2f}x requests/s, "
      f"{floor[4] / base_us:.2f}x CPU per request")
if $PAGE_NON2XX:
    print(f"the campaign page answered {$PAGE_NON2XX} non-2xx: its row is not comparable")
if rows_b:
    print(f"LAYOUT_B (${LAYOUT_B:-}) against the default layout, engine CPU per reserved order: "
          f"{rows_b[0][4] / rows[2][4]:.2f}x, requests/s {rows_b[0][1] / rows[2][1]:.2f}x")
print(f"after the race the order services took $DRAINED to take its {$RACE_ORDERS} "
      f"orders{' (LAYOUT_B race: ${DRAINED_B:-})' if rows_b else ''}; the next phase waited for them")
if $LIM_REFUSED:
    print(f"the rate-limited engine refused {$LIM_REFUSED} requests: its row is not comparable")
# The phases in which wrk lost answers (see the head of this script).
def wrk_output(phase):
    try:
        return open(f"$WORK/{phase}.txt").read()
    except FileNotFoundError:
        return ""
for phase in ["ceiling", "campaign_page", "race", "race_b", "sold_out", "sold_out_limited", "floor",
              "ceiling_again"]:
    errors = re.search(r"Socket errors: (.*)", wrk_output(phase))
    if errors:
        print(f"{phase}: wrk's socket errors ({errors.group(1)}): its row counts only the answers it read")
total = int(sys.argv[2])
ok = True
for name, phase, stats_json, non2xx in [("race", "race", sys.argv[1], $RACE_NON2XX),
                                        ("LAYOUT_B race", "race_b", sys.argv[3], ${B_NON2XX:-0})]:
    if not stats_json:
        continue
    stats = json.loads(stats_json)["stats"]
    held = stats["reserved"] + stats["paid"]
    sale_ok = stats["remaining"] >= 0 and stats["remaining"] + held == total and held <= total
    ok = ok and sale_ok
    print(f"{name}: {held} orders of {total} units, non-2xx answers {non2xx}; "
          f"remaining + reserved + paid == stock_total: {'yes' if sale_ok else 'NO'}")
    answers = int(re.search(r"(\d+) requests in", wrk_output(phase)).group(1))
    if held - answers > $CONNECTIONS:
        print(f"{name}: wrk read {answers} answers of the {held} orders made, more apart than "
              f"the $CONNECTIONS requests in flight when it stopped: its row is not comparable")
sys.exit(0 if ok else 1)
PY
