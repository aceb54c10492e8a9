#!/usr/bin/env bash
# Redis's own work per reservation, counted in instructions rather than
# seconds: redis-server runs under valgrind's callgrind while the reserve
# script takes calls of 64 reservations (PER_CALL; new shoppers each, one
# unit, no idempotency key), sent straight to Redis with `redis-cli --pipe`,
# on a sale whose shoppers hash and payment deadlines already hold 600
# entries, as a race's do soon after it opens (smaller, Redis keeps them
# as listpacks and searches them end to end). Two runs (20 and 120 calls)
# cancel out start-up and shutdown; the difference, divided by the
# reservations between them, is what one reservation costs Redis. Two more
# runs then have `accept_orders.lua` take every order made, two stream
# entries a call as the order service takes them in a race: the difference
# to the first two is what accepting one order costs Redis. Each script is
# sent as the engine sends it: its body printed by `examples/lua_body.rs`,
# the engine's own rule (`store::with_helpers`). Instruction counts
# repeat run after run whatever else the machine is doing, so a change to
# the script shows even when it is far smaller than the noise of a
# wall-clock benchmark.
#
# Run: bash benches/redis_cost.sh           (this tree's lua/)
#      bash benches/redis_cost.sh REV        (and REV's, for a ratio: both
#                                             built by this tree's rule, so
#                                             it compares their Lua)
#      PER_CALL=1 bash benches/redis_cost.sh  (calls of one reservation: a
#                                             call's fixed cost and one
#                                             reservation's)
#      ALL_HELPERS=1 bash benches/redis_cost.sh  (every script sent with all
#                                             of lua/common.lua, as the
#                                             engine sent them before it
#                                             sent only the helpers called)
# Needs valgrind, redis-server and python3; about 20 seconds per tree (and
# the first time a debug build of the example).
# Traffic goes to 127.0.0.1 only; everything it starts is stopped on exit.
set -euo pipefail
# A failure inside $(...) (instructions, per_order) stops the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }

. benches/lib.sh

# body LUA_DIR NAME: the script's body as the engine sends it (ALL_HELPERS=1:
# after the whole of common.lua).
if [ "${ALL_HELPERS:-}" = 1 ]; then
  body() { cat "$1/common.lua" "$1/$2.lua"; }
else
  cargo build --quiet --example lua_body
  body() { "${CARGO_TARGET_DIR:-target}/debug/examples/lua_body" "$1" "$2"; }
fi

# pipe LUA_DIR BATCHES FILE PER_CALL: the RESP commands of one run.
pipe() {
  body "$1" reserve >"$WORK/reserve.body"
  python3 - "$@" "$WORK/reserve.body" <<'PY'
import hashlib, sys
lua, batches, out, per_call = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reserve = open(f"{lua}/reserve.lua").read()
body = open(sys.argv[5], newline="").read()
sys.path.insert(0, "benches")
from shop import resp_command as cmd
sha = hashlib.sha1(body.encode()).hexdigest()
# Before the orders hash, every new order had its own key in KEYS.
key_per_order = "KEYS[9 + i]" in reserve
# Since the cancels bound, ARGV[1] is that bound and KEYS[11] the cancels.
cancels = "cancels_max" in reserve
# Since the expiries bound, ARGV[2] is that bound and the expiries key
# follows the cancels.
expiries = "expiries_max" in reserve
# Since the sparse extras, ARGV[2] (ARGV[3] since the expiries bound) is
# the number of requests and a request without an idempotency key or
# purchase token sends three arguments.
sparse = expiries or "local count = tonumber(ARGV[2])" in reserve
# Since the shoppers hash, a shopper's units and orders are one field of
# fs:{sale}:shoppers (no buyers or uorders key).
shoppers_hash = "KEYS[4] fs:{sale}:shoppers" in reserve
# Since a queued sale's admissions are checked at reserve, its line and its
# admissions follow the expiries (an open sale's call names them too).
queue_keys = "KEYS[12] fs:{sale}:q:line" in reserve
tag = "fs:{s_cost}:"
with open(out, "wb") as f:
    f.write(cmd("SCRIPT", "LOAD", body))
    f.write(cmd("HSET", tag + "sale", "state", "scheduled", "starts_at", 0,
                "ends_at", 9999999999999, "per_user_limit", 5, "price_cents", 100,
                "payment_timeout_secs", 900, "currency", "CNY", "require_purchase_token", "0"))
    f.write(cmd("SET", tag + "stock", 10**9))
    # Shoppers and calls from before: a race's per-shopper hashes and its
    # payment deadlines are hash tables and a skip list soon after it
    # opens. A short run of small calls would otherwise measure them as
    # small listpacks, searched end to end for each field and member.
    for key in ("shoppers",) if shoppers_hash else ("buyers", "uorders"):
        f.write(cmd("HSET", tag + key, *[x for i in range(600) for x in (f"earlier-{i}", "0")]))
    f.write(cmd("ZADD", tag + "deadlines", *[x for i in range(600) for x in (1, f"earlier-{i}")]))
    n = 0
    for _ in range(batches):
        per_shopper = ("shoppers", "idem") if shoppers_hash else ("buyers", "idem", "uorders")
        keys = [tag + k for k in ("sale", "stock", "stats", *per_shopper,
                                  "stream", "deadlines", "ptokens")]
        args, ids = ([10] if cancels else []) + ([10] if expiries else []) + ([per_call] if sparse else []), []
        for _ in range(per_call):
            n += 1
            ids.append(f"o_s_cost_{n:012d}")
            args += [f"shopper-{n}", 1, ids[-1]] + ([] if sparse else ["", ""])
        keys += [tag + "order:" + i for i in ids] if key_per_order else [tag + "orders"]
        keys += [tag + "cancels"] if cancels else []
        keys += [tag + "expiries"] if expiries else []
        keys += [tag + "q:line", tag + "q:exp"] if queue_keys else []
        f.write(cmd("EVALSHA", sha, len(keys), *keys, *args))
PY
}

# accepting LUA_DIR ENTRIES FILE: the RESP commands that accept every order
# of the stream's entries (ENTRIES: `XRANGE` as JSON), two entries a call.
# accept_orders.lua takes entry ids since batches, order ids before.
accepting() {
  body "$1" accept_orders >"$WORK/accept.body"
  python3 - "$@" "$WORK/accept.body" <<'PY'
import hashlib, json, sys
lua, entries, out = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
body = open(sys.argv[4], newline="").read()
sys.path.insert(0, "benches")
from shop import resp_command as cmd
accept = open(f"{lua}/accept_orders.lua").read()
sha = hashlib.sha1(body.encode()).hexdigest()
tag = "fs:{s_cost}:"
by_entry = "KEYS[4] fs:{sale}:accepted" in accept
with open(out, "wb") as f:
    f.write(cmd("SCRIPT", "LOAD", body))
    for first in range(0, len(entries), 2):
        pair = entries[first:first + 2]
        if by_entry:
            keys = [tag + k for k in ("stats", "outbox", "stream", "accepted")]
            args = [entry[0] for entry in pair]
        else:
            keys = [tag + k for k in ("stats", "outbox", "orders")]
            args = [i for entry in pair for i in dict(zip(entry[1][::2], entry[1][1::2]))["order_ids"].split()]
        f.write(cmd("EVALSHA", sha, len(keys), *keys, "0", *args))
PY
}

# instructions LUA_DIR BATCHES ACCEPT: redis-server's total for one run
# (ACCEPT 1: the orders made are accepted too).
instructions() {
  local port out
  port=$(free_port)
  out="$WORK/callgrind.$2.$3.out"
  pipe "$1" "$2" "$WORK/commands" "$PER_CALL"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no >/dev/null 2>&1 &
  local server=$!
  for _ in $(seq 600); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local errors
  errors=$(redis-cli -p "$port" --pipe <"$WORK/commands" | awk '/errors:/ {print $2}' | tr -d ,)
  if [ "$3" = 1 ]; then
    redis-cli -p "$port" --json XRANGE 'fs:{s_cost}:stream' - + >"$WORK/entries.json"
    accepting "$1" "$WORK/entries.json" "$WORK/accepts"
    errors=$((errors + $(redis-cli -p "$port" --pipe <"$WORK/accepts" | awk '/errors:/ {print $2}' | tr -d ,)))
  fi
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait "$server" || true
  [ "$errors" = 0 ] || { echo "a script failed $errors times" >&2; exit 1; }
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

# per_order LUA_DIR -> "reservation acceptance": instructions per order.
per_order() {
  local few many few_accepted many_accepted
  few=$(instructions "$1" 20 0)
  many=$(instructions "$1" 120 0)
  few_accepted=$(instructions "$1" 20 1)
  many_accepted=$(instructions "$1" 120 1)
  echo $(( (many - few) / (100 * PER_CALL) )) \
    $(( (many_accepted - few_accepted - many + few) / (100 * PER_CALL) ))
}

PER_CALL=${PER_CALL:-64}
[[ $PER_CALL =~ ^[1-9][0-9]*$ ]] || { echo "PER_CALL must be a number of reservations, 1 or more" >&2; exit 1; }
read -r HERE HERE_ACCEPT < <(per_order lua)
echo "this tree: $HERE instructions of redis-server per reservation (calls of $PER_CALL)," \
  "$HERE_ACCEPT per order accepted ($((2 * PER_CALL)) a call)"
if [ $# -gt 0 ]; then
  mkdir "$WORK/lua"
  for script in common reserve accept_orders; do
    git show "$1:lua/$script.lua" >"$WORK/lua/$script.lua"
  done
  read -r THERE THERE_ACCEPT < <(per_order "$WORK/lua")
  echo "$1: $THERE instructions per reservation, $THERE_ACCEPT per order accepted"
  python3 -c "print(f'this tree does {$HERE / $THERE:.2f}x the work of $1 per reservation, '
                    f'{$HERE_ACCEPT / $THERE_ACCEPT:.2f}x per order accepted')"
fi
