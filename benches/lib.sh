# Sourced by the benchmark scripts: a free port, the processes and work
# directory each script starts (stopped and removed on exit), and the
# allocator calls in a callgrind dump.
WORK=$(mktemp -d)
PIDS=()
bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap bench_cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# allocator_calls CALLGRIND_OUT PER: the calls into the engine's allocator
# in a callgrind dump (callgrind's default output: names compressed), over
# PER (orders, requests), to one decimal: mimalloc's aligned malloc, zalloc
# and realloc, which Rust's global allocator calls (a realloc counts as one;
# frees are not counted). For benches/engine_cost.sh and race_cost.sh.
allocator_calls() {
  python3 - "$1" "$2" <<'PY'
import re, sys
ENTRY = {"mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned"}
names, caller, callee, count = {}, None, None, 0
# A function's name comes with its first mention, as caller, callee or
# jump target; later mentions give only its number.
pattern = re.compile(r"([cj]?fn)=\((\d+)\)(?: (.*))?$")
for line in open(sys.argv[1], errors="replace"):
    named = pattern.match(line.rstrip("\n"))
    if named:
        kind, ident, name = named.groups()
        if name:
            names[ident] = name
        if kind == "fn":
            caller = names.get(ident)
        elif kind == "cfn":
            callee = names.get(ident)
    elif line.startswith("calls=") and callee in ENTRY and caller not in ENTRY:
        count += int(line[6:].split()[0])
print(f"{count / int(sys.argv[2]):.1f}")
PY
}

# The load benchmarks' shared pieces (benches/http.sh, benches/race_ab.sh,
# benches/race_cost.sh). The engine's and the sale's need ADMIN and SECRET
# set by the script.

# start_redis: a redis-server on a free port, AOF on with one fsync a second
# (as a production Redis would run): sets REDIS_PORT and REDIS_PID.
start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK" --save '' \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction >/dev/null &
  REDIS_PID=$!
  PIDS+=($!)
  for _ in $(seq 200); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
}

# start_engine BIN PORT GLOBAL USER IP [VAR=value...]: an engine on that
# Redis with these rate limits per second (0: off; bursts equal to the
# rate) and these further settings; its pid is $!. The Redis fsyncs once a
# second, which the engine accepts only told to warn.
start_engine() {
  env "${@:6}" FLASHSALE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/ FLASHSALE_REDIS_DURABILITY=warn \
    FLASHSALE_ADMIN_TOKEN=$ADMIN \
    FLASHSALE_USER_TOKEN_SECRET=$SECRET FLASHSALE_PAYMENTS=simulated \
    FLASHSALE_RATE_GLOBAL_PER_SEC=$3 FLASHSALE_RATE_GLOBAL_BURST=$3 \
    FLASHSALE_RATE_USER_PER_SEC=$4 FLASHSALE_RATE_USER_BURST=$4 \
    FLASHSALE_RATE_IP_PER_SEC=$5 FLASHSALE_RATE_IP_BURST=$5 \
    RUST_LOG=warn "$1" --listen "127.0.0.1:$2" >"$WORK/engine-$2.log" 2>&1 &
  PIDS+=($!)
}

wait_for() { for _ in $(seq 200); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "not up: $1" >&2; exit 1; }

new_sale() { # engine URL, stock, per-user limit -> sale id (open now, for an hour)
  local starts ends
  starts=$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)
  ends=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
  curl -fs -X POST "$1/admin/v1/sales" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' \
    -d "{\"sku\":\"BENCH\",\"title\":\"bench\",\"price_cents\":100,\"stock_total\":$2,\"per_user_limit\":$3,\"starts_at\":\"$starts\",\"ends_at\":\"$ends\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# order_script SHOPPERS THREADS: writes $WORK/order.lua, a wrk script in
# which every request is a distinct shopper's order of one unit (one token
# per shopper, each used once until all are, as on 11.11: many shoppers,
# one attempt each). Each wrk thread builds its requests before the run, so
# that sending one costs wrk a table lookup: wrk.format per request (a
# table, a string.format per line, a concat) took CPU from the same two
# cores the measured server runs on.
order_script() {
  python3 - "$SECRET" "$1" "$WORK/tokens.lua" <<'PY'
import sys
sys.path.insert(0, "benches")
from shop import token
secret, count, path = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
with open(path, "w") as out:
    out.write("tokens = {\n")
    for i in range(count):
        out.write(f'"{token(secret, i)}",\n')
    out.write("}\n")
PY
  cat >"$WORK/order.lua" <<LUA
dofile("$WORK/tokens.lua")
-- Thread n of N takes tokens n, n + N, n + 2N...: no token twice.
local threads = 0
setup = function(thread)
  thread:set("offset", threads)
  threads = threads + 1
  thread:set("stride", $2)
end
local requests, count, i = {}, 0, 0
init = function()
  local marker = "<token>"
  local template = wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. marker,
    ["Content-Type"] = "application/json",
  }, '{"quantity":1}')
  local at = template:find(marker, 1, true)
  local head, tail = template:sub(1, at - 1), template:sub(at + #marker)
  for k = offset + 1, #tokens, stride do
    count = count + 1
    requests[count] = head .. tokens[k] .. tail
  end
end
request = function()
  i = i % count + 1
  return requests[i]
end
LUA
}

# CPU ticks a process has used so far (user + system, from /proc), and of
# them in user space (the rest is the kernel's: the sockets' work).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

orders_in() { # a sale's JSON -> its orders (reserved and paid)
  python3 -c 'import json, sys; stats = json.load(sys.stdin)["stats"]; print(stats["reserved"] + stats["paid"])' <<<"$1"
}

# orders_accepted URL...: the orders these engines' order services have
# taken so far (from their /metrics); fails when one does not answer.
orders_accepted() {
  local metrics="" url
  for url in "$@"; do
    metrics+=$(curl -fs "$url/metrics")$'\n' || { echo "$url/metrics did not answer" >&2; return 1; }
  done
  awk '/^flashsale_orders_accepted_total / {n += $2} END {printf "%d", n}' <<<"$metrics"
}

# drained BEFORE ORDERS URL...: waits until these engines' order services
# have taken ORDERS orders more than BEFORE (every engine on one Redis is in
# one consumer group, so a race's orders are taken by all of them) and
# prints how long that took; fails after 120 s.
drained() {
  local start=$EPOCHREALTIME now
  for _ in $(seq 1200); do
    now=$(orders_accepted "${@:3}") || return 1
    if [ $((now - $1)) -ge "$2" ]; then
      awk -v from="$start" -v to="$EPOCHREALTIME" 'BEGIN {printf "%.1f s", to - from}'
      return 0
    fi
    sleep 0.1
  done
  return 1
}
