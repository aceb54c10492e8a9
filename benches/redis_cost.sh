#!/usr/bin/env bash
# Redis's own work per reservation, counted in instructions rather than
# seconds: redis-server runs under valgrind's callgrind while the reserve
# script takes batches of 64 reservations (64 new shoppers each, one unit,
# no idempotency key), sent straight to Redis with `redis-cli --pipe`.
# Two runs (20 and 120 batches) cancel out start-up and shutdown; the
# difference, divided by the 6,400 reservations between them, is what one
# reservation costs Redis. Instruction counts repeat run after run whatever
# else the machine is doing, so a change to the script shows even when it
# is far smaller than the noise of a wall-clock benchmark.
#
# Run: bash benches/redis_cost.sh           (this tree's lua/)
#      bash benches/redis_cost.sh REV        (and REV's, for a ratio)
# Needs valgrind, redis-server and python3; about a minute per tree.
# Traffic goes to 127.0.0.1 only; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }

. benches/lib.sh

# pipe LUA_DIR BATCHES FILE: the RESP commands of one run.
pipe() {
  python3 - "$@" <<'PY'
import hashlib, sys
lua, batches, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
reserve = open(f"{lua}/reserve.lua").read()
body = open(f"{lua}/common.lua").read() + reserve
sha = hashlib.sha1(body.encode()).hexdigest()
# Before the orders hash, every new order had its own key in KEYS.
key_per_order = "KEYS[9 + i]" in reserve
# Since the cancels bound, ARGV[1] is that bound and KEYS[11] the cancels.
cancels = "cancels_max" in reserve
def cmd(*args):
    words = [str(a).encode() for a in args]
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
tag = "fs:{s_cost}:"
with open(out, "wb") as f:
    f.write(cmd("SCRIPT", "LOAD", body))
    f.write(cmd("HSET", tag + "sale", "state", "scheduled", "starts_at", 0,
                "ends_at", 9999999999999, "per_user_limit", 5, "price_cents", 100,
                "payment_timeout_secs", 900, "currency", "CNY", "require_purchase_token", "0"))
    f.write(cmd("SET", tag + "stock", 10**9))
    n = 0
    for _ in range(batches):
        keys = [tag + k for k in ("sale", "stock", "stats", "buyers", "idem", "uorders",
                                  "stream", "deadlines", "ptokens")]
        args, ids = ([10] if cancels else []), []
        for _ in range(64):
            n += 1
            ids.append(f"o_s_cost_{n:012d}")
            args += [f"shopper-{n}", 1, ids[-1], "", ""]
        keys += [tag + "order:" + i for i in ids] if key_per_order else [tag + "orders"]
        keys += [tag + "cancels"] if cancels else []
        f.write(cmd("EVALSHA", sha, len(keys), *keys, *args))
PY
}

# instructions LUA_DIR BATCHES: redis-server's total for one run.
instructions() {
  local port out
  port=$(free_port)
  out="$WORK/callgrind.$2.out"
  pipe "$1" "$2" "$WORK/commands"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no >/dev/null 2>&1 &
  local server=$!
  for _ in $(seq 600); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local errors
  errors=$(redis-cli -p "$port" --pipe <"$WORK/commands" | awk '/errors:/ {print $2}' | tr -d ,)
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait "$server" || true
  [ "$errors" = 0 ] || { echo "the reserve script failed $errors times" >&2; exit 1; }
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

# per_reservation LUA_DIR
per_reservation() {
  local few many
  few=$(instructions "$1" 20)
  many=$(instructions "$1" 120)
  echo $(( (many - few) / (100 * 64) ))
}

HERE=$(per_reservation lua)
echo "this tree: $HERE instructions of redis-server per reservation (batches of 64)"
if [ $# -gt 0 ]; then
  mkdir "$WORK/lua"
  git show "$1:lua/common.lua" >"$WORK/lua/common.lua"
  git show "$1:lua/reserve.lua" >"$WORK/lua/reserve.lua"
  THERE=$(per_reservation "$WORK/lua")
  echo "$1: $THERE instructions per reservation"
  python3 -c "print(f'this tree does {$HERE / $THERE:.2f}x the work of $1 per reservation')"
fi
