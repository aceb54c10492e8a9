#!/usr/bin/env bash
# One command, end to end: build, start a throw-away redis-server and the
# engine on free ports of 127.0.0.1, run a load suite against them, print
# the verdict, stop everything (also on failure or ctrl-c).
#
#   bash loadtest/spike.sh           the full local spike (release build)
#   bash loadtest/spike.sh --smoke   CI's smoke: the suite's unit tests, then a
#                                    few seconds of spike and buy-and-pay, small
#                                    stock (debug build)
#   bash loadtest/spike.sh -- OPTIONS...
#                                    the suite with your own options instead of
#                                    the spike's (release build), e.g.
#                                    -- --scenarios mixed -u 300 -r 100 -t 30s
#
# Exits non-zero when a verdict is FAIL. Reports (goose's HTML and JSON, the
# verdict inside the JSON) go to $FLASHSALE_LOADTEST_REPORT_DIR
# (default target/loadtest). Traffic goes to 127.0.0.1 only. Every user
# makes one visit (--iterations 1), bounded by --patience-secs, so a suite
# ends by itself; `timeout` bounds it again.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
custom=()
case "${1:-}" in
  "") ;;
  --smoke) mode=smoke ;;
  --) mode=custom; shift; custom=("$@") ;;
  *) echo "usage: bash loadtest/spike.sh [--smoke | -- SUITE-OPTIONS...]" >&2; exit 2 ;;
esac

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || { echo "spike.sh: $tool is not on PATH (Debian: apt-get install -y redis-server)" >&2; exit 1; }
done

target_dir=${CARGO_TARGET_DIR:-target}
if [ "$mode" = smoke ]; then
  # Debug: CI's `cargo test` has already built the engine that way.
  profile_flag=(); bin_dir=$target_dir/debug
else
  profile_flag=(--release); bin_dir=$target_dir/release
fi
echo "--- building the engine and the load suite (${bin_dir##*/})"
cargo build "${profile_flag[@]}" -p flashsale --bin flashsale
cargo build "${profile_flag[@]}" -p flashsale-loadtest
if [ "$mode" = smoke ]; then
  echo "--- the load suite's unit tests"
  cargo test -p flashsale-loadtest
fi

work=$(mktemp -d)
report_dir=${FLASHSALE_LOADTEST_REPORT_DIR:-$target_dir/loadtest}
mkdir -p "$report_dir"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] && [ -f "$work/engine.log" ]; then
    echo "--- last lines of the engine's log"; tail -n 20 "$work/engine.log"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody listens on (a connection to it is refused), below the
# kernel's ephemeral range: a spike leaves thousands of the load's own client
# sockets in TIME_WAIT on ephemeral ports, and a server cannot bind one of
# them until they are gone.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % (ephemeral_low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  echo "spike.sh: no free port found" >&2; return 1
}

# Whether the engine at 127.0.0.1:$1 answers GET /readyz with 200 (bash
# alone: no curl needed).
ready() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  local status_line
  read -r status_line <&3
  exec 3<&-
  [[ $status_line == *" 200 "* ]]
}

# Polls `$@` every 0.1 s, for at most $1 tenths of a second.
wait_for() {
  local tenths=$1; shift
  for _ in $(seq 1 "$tenths"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
  --maxmemory-policy noeviction --logfile "$work/redis.log" &
pids+=($!)
wait_for 50 redis-cli -p "$redis_port" ping || { echo "spike.sh: redis-server did not start" >&2; exit 1; }

export FLASHSALE_ADMIN_TOKEN="loadtest-admin-token-of-32-bytes-$RANDOM$RANDOM"
export FLASHSALE_USER_TOKEN_SECRET="loadtest-secret-$RANDOM$RANDOM$RANDOM"
engine_port=$(free_port)
# Simulated payments for the pay route; one-second payment timeouts allowed
# so abandoned orders expire within the run; no per-address limit, since
# every shopper comes from 127.0.0.1 (the per-shopper and overall limits
# stay at their defaults); this throw-away Redis has no AOF, which the
# engine refuses unless told to only warn.
FLASHSALE_LISTEN="127.0.0.1:$engine_port" \
FLASHSALE_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
FLASHSALE_REDIS_DURABILITY=warn \
FLASHSALE_PAYMENTS=simulated \
FLASHSALE_PAYMENT_TIMEOUT_MIN_SECS=1 \
FLASHSALE_RATE_IP_PER_SEC=0 \
RUST_LOG=warn \
  "$bin_dir/flashsale" >"$work/engine.log" 2>&1 &
pids+=($!)
host="http://127.0.0.1:$engine_port"
wait_for 100 ready "$engine_port" || { echo "spike.sh: the engine did not become ready" >&2; exit 1; }
echo "--- redis-server on 127.0.0.1:$redis_port, engine on $host"

ulimit -n 20000 2>/dev/null || true
# Runs one suite: $1 names its reports, the rest are the suite's options.
suite() {
  local name=$1; shift
  echo "--- load suite: $name"
  # No telnet or WebSocket controller: nothing else listens.
  timeout 150 "$bin_dir/flashsale-loadtest" -H "$host" --no-telnet --no-websocket \
    --report-file "$report_dir/$name.html" --report-file "$report_dir/$name.json" "$@"
}

if [ "$mode" = smoke ]; then
  suite smoke-spike --scenarios spike -u 40 -r 40 --iterations 1 \
    --stock 10 --start-in-secs 2 --patience-secs 10
  suite smoke-buy-and-pay --scenarios buyandpay -u 30 -r 30 --iterations 1 \
    --stock 10 --payment-timeout-secs 2 --abandon-percent 50 --think-ms-max 500 --patience-secs 8
elif [ "$mode" = custom ]; then
  suite run "${custom[@]}"
else
  suite spike --scenarios spike -u 2000 -r 1000 --iterations 1 \
    --stock 500 --start-in-secs 15 --patience-secs 30
fi
echo "--- reports in $report_dir"
