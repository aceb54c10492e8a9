#!/usr/bin/env bash
# A soak: a mixed goose load for a set time against the engine on a
# throw-away Redis (the set-up of spike.sh, in loadtest/lib.sh), in
# consecutive rounds. Each round is one run of the suite (`--scenarios
# mixed`, `-t ROUND`): it creates its own two sales, open for half the
# round, so sales open and close all through the soak, and ends with the
# suite's own verdict. After every round the script records a sample:
#
#   rss_kb      the engine's resident memory (VmRSS of /proc/PID/status)
#   fds         the engine's open file descriptors (/proc/PID/fd)
#   redis_mem   Redis `used_memory` (`redis-cli info memory`)
#   orders      orders made so far (the rounds' verdicts: orders_created)
#   b/order     how much Redis `used_memory` grew since the first round per
#               order made since then (the first round's one-time costs,
#               scripts and streams, left out): Redis keeps every order of a
#               soak (retention deletes nothing that young), so its memory
#               grows with the orders; what must stay flat is the cost of each
#   p99_ms      goose's p99 of every request of the round ("Aggregated";
#               measured by the generator, after all users were launched)
#
# and prints the table and the verdict (see flat() below; the README's
# "Load testing" section says the same). Exits non-zero on FAIL.
#
#   bash loadtest/soak.sh                 30 minutes, rounds of 60 s (release build)
#   bash loadtest/soak.sh --minutes 2     what CI runs (with --debug); the
#                                         shortest run with a margin of samples
#   options: --minutes N (FLASHSALE_SOAK_MINUTES, 30)
#            --round-secs N (FLASHSALE_SOAK_ROUND_SECS; 60, or for runs under
#              5 minutes a tenth of the run, at least 10)
#            --users N (FLASHSALE_SOAK_USERS, 60) goose users per round
#            --tolerance-percent N (FLASHSALE_SOAK_TOLERANCE_PERCENT, 20)
#            --debug  the debug build (CI has built it already)
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${FLASHSALE_SOAK_MINUTES:-30}
round_secs=${FLASHSALE_SOAK_ROUND_SECS:-}
users=${FLASHSALE_SOAK_USERS:-60}
tolerance=${FLASHSALE_SOAK_TOLERANCE_PERCENT:-20}
profile=release
usage="usage: bash loadtest/soak.sh [--minutes N] [--round-secs N] [--users N] [--tolerance-percent N] [--debug]"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?$usage}; shift 2 ;;
    --round-secs) round_secs=${2:?$usage}; shift 2 ;;
    --users) users=${2:?$usage}; shift 2 ;;
    --tolerance-percent) tolerance=${2:?$usage}; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for value in "$minutes" "$users" "$tolerance" ${round_secs:+"$round_secs"}; do
  [[ $value =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: '$value' is not a positive whole number; $usage" >&2; exit 2; }
done
total_secs=$((minutes * 60))
if [ -z "$round_secs" ]; then
  # Enough samples for a verdict in a short run: about ten rounds (a
  # debug build's take a few seconds more than this), so two minutes
  # compare medians of two samples (see flat() below). A one-minute run
  # has about five, just enough for b/order's (three after its warm-up).
  round_secs=60
  [ "$minutes" -lt 5 ] && round_secs=$((total_secs / 10 < 10 ? 10 : total_secs / 10))
fi
command -v jq >/dev/null 2>&1 || { echo "soak.sh: jq is not on PATH (Debian: apt-get install -y jq)" >&2; exit 1; }

# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
lt_require_tools
lt_build "$profile"
lt_start

redis_used_memory() {
  redis-cli -p "$redis_port" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'
}
redis_before=$(redis_used_memory)
redis_first=0 orders_first=0
samples=$work/samples.tsv
printf 'round\telapsed_s\trss_kb\tfds\tredis_mem\torders\tb/order\tp99_ms\tround_verdict\n' >"$samples"
echo "--- soak: ${minutes} min of mixed load in rounds of ${round_secs} s, $users users each;" \
  "Redis used_memory before the first round: $redis_before bytes"

# Rounds until the time is up. A round takes its suite's set-up and
# verdict (a few seconds) besides goose's `-t`: the load lasts the round
# less the last round's overhead, so a sample comes about every round_secs.
# Each round's sales: the buy-and-pay sale opens at once, the spike sale
# 3 s later, each for half the load; abandoned orders expire after 2 s.
started=$SECONDS
round=0
orders=0
overhead=0
while [ $((SECONDS - started)) -lt "$total_secs" ]; do
  round=$((round + 1))
  round_started=$SECONDS
  name=$(printf 'soak-round-%02d' "$round")
  load_secs=$((round_secs - overhead))
  [ "$load_secs" -lt $((round_secs / 2)) ] && load_secs=$((round_secs / 2))
  half=$((load_secs / 2))
  round_verdict=PASS
  lt_suite $((round_secs + 120)) "$name" --scenarios mixed -u "$users" -r "$users" -t "${load_secs}s" \
    --stock 20 --start-in-secs 3 --sale-secs "$half" --payment-timeout-secs 2 \
    --abandon-percent 30 --think-ms-max 500 --patience-secs "$half" \
    >"$report_dir/$name.log" 2>&1 || round_verdict=FAIL
  overhead=$((SECONDS - round_started - load_secs))
  [ "$overhead" -lt 0 ] && overhead=0
  report=$report_dir/$name.json
  if [ ! -s "$report" ] || ! jq -e .flashsale_verdict >/dev/null "$report"; then
    echo "soak.sh: round $round left no verdict; its output:" >&2; tail -n 30 "$report_dir/$name.log" >&2; exit 1
  fi
  [ "$round_verdict" = FAIL ] && { echo "--- round $round: the suite's verdict FAILED:"; grep -F '[FAIL]' "$report_dir/$name.log" || true; }

  rss_kb=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$engine_pid/status")
  fds=$(find "/proc/$engine_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  redis_mem=$(redis_used_memory)
  orders=$((orders + $(jq '[.flashsale_verdict.sales[].orders_created] | add' "$report")))
  if [ "$round" -eq 1 ]; then
    redis_first=$redis_mem orders_first=$orders per_order=-
  elif [ "$orders" -gt "$orders_first" ]; then
    per_order=$(((redis_mem - redis_first) / (orders - orders_first)))
  else
    per_order=-
  fi
  p99=$(jq '.raw_response_metrics[] | select(.name == "Aggregated") | .percentile_99' "$report")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" $((SECONDS - started)) "$rss_kb" "$fds" \
    "$redis_mem" "$orders" "$per_order" "${p99:--}" "$round_verdict" >>"$samples"
  echo "--- round $round: $round_verdict; rss ${rss_kb} kB, $fds fds, Redis $redis_mem bytes, $orders orders, p99 ${p99:--} ms"
done

# The verdict on one column ($1: its name in the table; $2: the absolute
# slack added to the tolerance, in the column's unit, so a few kB or one
# descriptor of noise on a small value is no growth; $3: "reading" for a
# column whose samples are each a reading of their own, "average" for one
# whose every sample averages every round since the first, its own
# included). A "-" (no value yet) is left out. The first fifth of
# the samples is warm-up: at least one, and for an average at least two,
# so the first average compared spans two rounds rather than the single
# round after the first (b/order: one round alone read 1,205 in one
# one-minute run and 3,508 in another, with nothing different). Of the
# m samples after the warm-up (at least 3 needed), the first and the last
# third (k = max(1, m/3) samples each) are compared:
#   FAIL if median(last k) > median(first k) * (1 + tolerance) + slack,
#   FAIL if the m samples rise strictly from each to the next (m >= 5 for
#        a reading, m >= 10 for an average) and the last is more than the
#        slack above the first.
# An average is held to the second rule only over ten samples or more:
# each of its samples contains the ones before it, so in a short run a
# few rounds above the average lift it round after round with nothing
# growing (b/order: each round's two sales cost Redis about 1.3 kB
# whatever they sell, so a round that sells fewer orders than the average
# raises it; a one-minute run saw 776, 826, 847, 879, 881).
# Prints one line; returns 1 on FAIL.
flat() {
  case "${3-}" in reading | average) ;; *) echo "soak.sh: flat $1: '${3-}' is neither reading nor average" >&2; return 1 ;; esac
  awk -F'\t' -v col="$1" -v slack="$2" -v tol="$tolerance" -v kind="$3" '
    function median(from, to,   n, i, j, t, a) {
      n = 0
      for (i = from; i <= to; i++) a[++n] = v[i]
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    { all[++n] = $c }
    END {
      min_warm = kind == "average" ? 2 : 1
      warm = int(n / 5); if (warm < min_warm) warm = min_warm
      m = 0
      for (i = warm + 1; i <= n; i++) if (all[i] != "-") v[++m] = all[i] + 0
      if (m < 3) { printf "  [FAIL] %-9s %d samples after %d of warm-up: at least 3 needed (run longer, or shorter --round-secs)\n", col, m, warm; exit 1 }
      k = int(m / 3); if (k < 1) k = 1
      first = median(1, k); last = median(m - k + 1, m); limit = first * (1 + tol / 100) + slack
      rising = m >= (kind == "reading" ? 5 : 10) && v[m] - v[1] > slack
      for (i = 2; i <= m && rising; i++) if (v[i] <= v[i - 1]) rising = 0
      fail = last > limit || rising
      printf "  [%s] %-9s median of the last %d: %s, of the first %d after %d of warm-up: %s (limit %s)%s\n", \
        fail ? "FAIL" : "PASS", col, k, last, k, warm, first, limit, rising ? "; strictly rising" : ""
      exit fail
    }' "$samples"
}

echo "=== soak: $round rounds in $((SECONDS - started)) s ==="
column -t -s $'\t' "$samples" 2>/dev/null || cat "$samples"
pass=true
flat rss_kb 4096 reading || pass=false   # 4 MiB
flat fds 4 reading || pass=false
flat b/order 64 average || pass=false    # 64 bytes
flat p99_ms 20 reading || pass=false     # 20 ms
failed_rounds=$(awk -F'\t' 'NR > 1 && $NF != "PASS"' "$samples" | wc -l)
if [ "$failed_rounds" -eq 0 ]; then
  echo "  [PASS] every round's suite verdict PASS"
else
  echo "  [FAIL] $failed_rounds rounds' suite verdict FAIL (their logs: $report_dir/soak-round-*.log)"; pass=false
fi
if $pass; then echo "=== soak verdict: PASS ==="; else echo "=== soak verdict: FAIL ==="; exit 1; fi
