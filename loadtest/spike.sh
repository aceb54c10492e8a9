#!/usr/bin/env bash
# One command, end to end: build, start a throw-away redis-server and the
# engine on free ports of 127.0.0.1, run a load suite against them, print
# the verdict, stop everything (also on failure or ctrl-c).
#
#   bash loadtest/spike.sh           the full local spike (release build)
#   bash loadtest/spike.sh --smoke   CI's smoke: the suite's unit tests, then a
#                                    few seconds of spike, buy-and-pay and a
#                                    two-round campaign, small stock, then the
#                                    same buy-and-pay paying through WeChat Pay
#                                    (a second engine, in WeChat Pay mode
#                                    against the stand-in) (debug build)
#   bash loadtest/spike.sh -- OPTIONS...
#                                    the suite with your own options instead of
#                                    the spike's (release build), e.g.
#                                    -- --scenarios mixed -u 300 -r 100 -t 30s
#   FLASHSALE_LOADTEST_PAYMENTS=wechatpay bash loadtest/spike.sh -- OPTIONS...
#                                    the same, the engine in WeChat Pay mode
#                                    against the stand-in, buy-and-pay paying
#                                    through it
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

# The shared set-up: build, Redis, engine, cleanup.
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
lt_require_tools
if [ "$mode" = smoke ]; then
  # Debug: CI's `cargo test` has already built the engine that way.
  lt_build debug
  echo "--- the load suite's unit tests"
  cargo test -p flashsale-loadtest
else
  lt_build release
fi
lt_start

# Runs one suite: $1 names its reports, the rest are the suite's options.
suite() { lt_suite 150 "$@"; }

if [ "$mode" = smoke ]; then
  suite smoke-spike --scenarios spike -u 40 -r 40 --iterations 1 \
    --stock 10 --start-in-secs 2 --patience-secs 10
  suite smoke-buy-and-pay --scenarios buyandpay -u 30 -r 30 --iterations 1 \
    --stock 10 --payment-timeout-secs 2 --abandon-percent 50 --think-ms-max 500 --patience-secs 8
  suite smoke-campaign --scenarios campaign -u 80 -r 80 --iterations 1 --users-per-shopper 4 \
    --start-in-secs 5 --campaign-round-secs 2 --campaign-stock 4 --patience-secs 8
  # A subshell with its own processes, work directory and cleanup: a fresh
  # Redis, the stand-in, and the engine in WeChat Pay mode.
  (
    lt_pids=()
    lt_wrapper_pid=
    export FLASHSALE_LOADTEST_PAYMENTS=wechatpay
    lt_start
    suite smoke-buy-and-pay-wechatpay --scenarios buyandpay -u 30 -r 30 --iterations 1 \
      --stock 10 --payment-timeout-secs 2 --abandon-percent 50 --think-ms-max 500 --patience-secs 8
  )
elif [ "$mode" = custom ]; then
  suite run "${custom[@]}"
else
  suite spike --scenarios spike -u 2000 -r 1000 --iterations 1 \
    --stock 500 --start-in-secs 15 --patience-secs 30
fi
echo "--- reports in $report_dir"
