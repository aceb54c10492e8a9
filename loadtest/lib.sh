# The set-up the load scripts share (sourced by loadtest/spike.sh and
# loadtest/soak.sh, not run): build, a throw-away redis-server and the
# engine on free ports of 127.0.0.1, a suite runner, and cleanup of all of
# it on exit, failure or ctrl-c. The sourcing script has `set -euo pipefail`
# and its working directory at the repository's root.
#
#   lt_require_tools           redis-server and redis-cli on PATH
#   lt_build debug|release     builds the engine, the suite and the WeChat Pay
#                              stand-in; sets $bin_dir
#   lt_start                   starts Redis and the engine; sets $work,
#                              $report_dir, $redis_port, $engine_port,
#                              $engine_pid, $host, and the trap that stops them
#
# lt_build also builds the WeChat Pay stand-in (`wechatpay-standin`). With
# FLASHSALE_LOADTEST_PAYMENTS=wechatpay (the suite's own --payments variable)
# lt_start starts it before the engine, on a free port, and start the engine in
# WeChat Pay mode against it: the stand-in writes the engine's key files and
# settings (engine.env) to $work/wechatpay; the notify URL is the engine's own.
# lt_start exports FLASHSALE_LOADTEST_WECHATPAY_STANDIN for the suite.
#
# FLASHSALE_LOADTEST_ENGINE_WRAPPER, if set, is a command the engine runs
# under (split on spaces), e.g. `heaptrack -o /tmp/engine` or
# `env MALLOC_ARENA_MAX=2`; $engine_pid is still the engine's own process
# (what the soak samples and what is stopped first on exit).
#   lt_suite SECS NAME OPTS... one run of the suite, bounded by `timeout SECS`,
#                              its reports named NAME.html and NAME.json

lt_script=${0##*/}

lt_require_tools() {
  local tool
  for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$lt_script: $tool is not on PATH (Debian: apt-get install -y redis-server)" >&2; exit 1; }
  done
}

lt_build() {
  local target_dir=${CARGO_TARGET_DIR:-target} profile_flag=()
  [ "$1" = release ] && profile_flag=(--release)
  bin_dir=$target_dir/$1
  echo "--- building the engine and the load suite ($1)"
  cargo build "${profile_flag[@]}" -p flashsale --bin flashsale
  # The stand-in's library is the suite's already: its binary costs a link.
  cargo build "${profile_flag[@]}" -p flashsale-loadtest -p wechatpay-standin
}

# Whether this run pays through WeChat Pay (the stand-in).
lt_wechatpay() {
  [ "${FLASHSALE_LOADTEST_PAYMENTS:-simulated}" = wechatpay ]
}

# Starts the WeChat Pay stand-in for the engine on port $1, waits for its
# engine.env, and exports the engine's WeChat Pay settings from it plus the
# notify URL, and the stand-in's address for the suite.
lt_start_wechatpay() {
  local port dir=$work/wechatpay
  mkdir -p "$dir"
  port=$(lt_free_port)
  "$bin_dir/wechatpay-standin" --listen "127.0.0.1:$port" --dir "$dir" >"$work/wechatpay.log" 2>&1 &
  lt_pids+=($!)
  lt_wait_for 300 test -f "$dir/engine.env" || { echo "$lt_script: the WeChat Pay stand-in did not start" >&2; cat "$work/wechatpay.log" >&2; exit 1; }
  set -a
  # shellcheck source=/dev/null
  source "$dir/engine.env"
  set +a
  export FLASHSALE_WECHATPAY_NOTIFY_URL="http://127.0.0.1:$1/api/v1/payments/wechatpay/notify"
  export FLASHSALE_LOADTEST_WECHATPAY_STANDIN="http://127.0.0.1:$port"
  echo "--- WeChat Pay stand-in on $FLASHSALE_LOADTEST_WECHATPAY_STANDIN"
}

lt_pids=()
lt_wrapper_pid=
lt_cleanup() {
  local status=$? i
  for ((i = ${#lt_pids[@]} - 1; i >= 0; i--)); do kill "${lt_pids[i]}" 2>/dev/null || true; done
  for pid in "${lt_pids[@]}" $lt_wrapper_pid; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] && [ -f "${work:-}/engine.log" ]; then
    echo "--- last lines of the engine's log"; tail -n 20 "$work/engine.log"
  fi
  [ -n "${work:-}" ] && rm -rf "$work"
  exit "$status"
}

# A port nobody listens on (a connection to it is refused), below the
# kernel's ephemeral range: a spike leaves thousands of the load's own client
# sockets in TIME_WAIT on ephemeral ports, and a server cannot bind one of
# them until they are gone.
lt_free_port() {
  local port ephemeral_low
  ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % (ephemeral_low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  echo "$lt_script: no free port found" >&2; return 1
}

# Whether the engine at 127.0.0.1:$1 answers GET /readyz with 200 (bash
# alone: no curl needed).
lt_ready() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  local status_line
  read -r status_line <&3
  exec 3<&-
  [[ $status_line == *" 200 "* ]]
}

# Polls `$@` every 0.1 s, for at most $1 tenths of a second.
lt_wait_for() {
  local tenths=$1; shift
  for _ in $(seq 1 "$tenths"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# The engine's process under a wrapper process $1: $1 itself once it runs
# $bin_dir/flashsale (a wrapper that execs), or its child that does (polled
# for 10 s while the wrapper starts it).
lt_engine_under() {
  local engine pid parent
  engine=$(realpath "$bin_dir/flashsale")
  for _ in $(seq 1 100); do
    for pid in $(pgrep -P "$1"); do
      [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$engine" ] && { echo "$pid"; return 0; }
    done
    [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$engine" ] && { echo "$1"; return 0; }
    sleep 0.1
  done
  return 1
}

lt_start() {
  work=$(mktemp -d)
  report_dir=${FLASHSALE_LOADTEST_REPORT_DIR:-${CARGO_TARGET_DIR:-target}/loadtest}
  mkdir -p "$report_dir"
  trap lt_cleanup EXIT
  trap 'exit 130' INT TERM

  redis_port=$(lt_free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
    --maxmemory-policy noeviction --logfile "$work/redis.log" &
  lt_pids+=($!)
  lt_wait_for 50 redis-cli -p "$redis_port" ping || { echo "$lt_script: redis-server did not start" >&2; exit 1; }

  export FLASHSALE_ADMIN_TOKEN="loadtest-admin-token-of-32-bytes-$RANDOM$RANDOM"
  export FLASHSALE_USER_TOKEN_SECRET="loadtest-secret-$RANDOM$RANDOM$RANDOM"
  engine_port=$(lt_free_port)
  local payments=simulated
  if lt_wechatpay; then
    lt_start_wechatpay "$engine_port"
    payments=wechatpay
  fi
  local wrapper=()
  read -r -a wrapper <<<"${FLASHSALE_LOADTEST_ENGINE_WRAPPER:-}"
  # Simulated payments for the pay route (or WeChat Pay against the
  # stand-in, as above); one-second payment timeouts allowed
  # so abandoned orders expire within the run; no per-address limit, since
  # every shopper comes from 127.0.0.1 (the per-shopper and overall limits
  # stay at their defaults); this throw-away Redis has no AOF, which the
  # engine refuses unless told to only warn.
  FLASHSALE_LISTEN="127.0.0.1:$engine_port" \
  FLASHSALE_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
  FLASHSALE_REDIS_DURABILITY=warn \
  FLASHSALE_PAYMENTS=$payments \
  FLASHSALE_PAYMENT_TIMEOUT_MIN_SECS=1 \
  FLASHSALE_RATE_IP_PER_SEC=0 \
  RUST_LOG=warn \
    "${wrapper[@]}" "$bin_dir/flashsale" >"$work/engine.log" 2>&1 &
  engine_pid=$!
  if [ "${#wrapper[@]}" -gt 0 ]; then
    # The wrapper is not stopped but waited for: it ends with the engine,
    # so a profiler sees the engine exit and writes its data.
    lt_wrapper_pid=$engine_pid
    engine_pid=$(lt_engine_under "$engine_pid") || { echo "$lt_script: no engine process under the wrapper" >&2; exit 1; }
  fi
  lt_pids+=("$engine_pid")
  host="http://127.0.0.1:$engine_port"
  lt_wait_for 100 lt_ready "$engine_port" || { echo "$lt_script: the engine did not become ready" >&2; exit 1; }
  echo "--- redis-server on 127.0.0.1:$redis_port, engine on $host (pid $engine_pid)"
  ulimit -n 20000 2>/dev/null || true
}

lt_suite() {
  local secs=$1 name=$2; shift 2
  echo "--- load suite: $name"
  # No telnet or WebSocket controller: nothing else listens.
  timeout "$secs" "$bin_dir/flashsale-loadtest" -H "$host" --no-telnet --no-websocket \
    --report-file "$report_dir/$name.html" --report-file "$report_dir/$name.json" "$@"
}
