#!/usr/bin/env bash
# Writes docs/performance.md: runs every benchmark and a sustained-load run of the
# whole pipeline on the local stack, and puts each figure beside the command that
# produced it. Takes about 15 minutes; run it on an otherwise idle machine.
#
#   docs/performance.sh            # writes docs/performance.md
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/lib.sh

out=docs/performance.md
work="$(mktemp -d)"
stack_was_up=0
deploy/local/status >/dev/null 2>&1 && stack_was_up=1
demo_pid=""
cleanup() {
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
  [ "$stack_was_up" -eq 1 ] || deploy/local/down
  rm -rf "$work"
}
trap cleanup EXIT
deploy/local/up
eval "$(deploy/local/env)"

bench() { # name, command…
  local name="$1"; shift
  say "running: $*"
  printf '%s\n' "$*" >"$work/$name.cmd"
  "$@" >"$work/$name.txt" 2>&1
}
bench hot_path cargo bench -q -p event-model --bench hot_path
bench decode cargo bench -q -p shard-consumer --bench decode
bench live_state cargo bench -q -p player-state-worker --bench live_state
bench load cargo bench -q -p warehouse --bench load
bench heatmap cargo bench -q -p pipelinectl --bench heatmap
bench backfill cargo bench -q -p pipelinectl --bench backfill
bench takeover cargo bench -q -p shard-consumer --bench takeover
bench scale cargo bench -q -p consumer-sim --bench scale

# Sustained load: a minute of game at 1,000 events/s through all four services; peak
# RSS (VmHWM) of each once the warehouse holds every valid event.
say "sustained load: 60 s at 1,000 events/s through the demo"
printf '%s\n' "DEMO_HOLD=1 DEMO_SECONDS=60 DEMO_RATE=1000 deploy/local/demo" >"$work/sustained.cmd"
DEMO_HOLD=1 DEMO_SECONDS=60 DEMO_RATE=1000 DEMO_HEATMAP="$work/heatmap.png" deploy/local/demo >"$work/sustained.txt" 2>&1 &
demo_pid=$!
for _ in $(seq 600); do
  grep -q "the services keep running" "$work/sustained.txt" && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/sustained.txt" >&2; die "the sustained-load run failed"; }
  sleep 1
done
grep -q "the services keep running" "$work/sustained.txt" || die "the sustained-load run did not finish in 10 minutes"
: >"$work/rss.txt"
for service in s3-connector redshift-connector cron-connector player-state-worker; do
  pid="$(pgrep -f "target/debug/$service" | head -1)"
  printf '%s %s\n' "$service" "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")" >>"$work/rss.txt"
done
kill -TERM "$demo_pid"; wait "$demo_pid" 2>/dev/null || true; demo_pid=""

# --- the report ---------------------------------------------------------------
row() { printf '| %s | %s | `%s` |\n' "$1" "$2" "$(cat "$work/$3.cmd")"; }
hot6="$(awk -F'|' '$1+0 == 6 {gsub(/ /, "", $2); gsub(/ /, "", $6); print $2 " events/s, " $6 " of gzip alone"}' "$work/hot_path.txt")"
event_data="$(sed -n 's/^level 6 with a \([0-9]*\)-byte event_data: \([0-9]*\) events\/s, \([0-9.]*\) of without it.*/\2 events\/s, \3 of the same events without it/p' "$work/hot_path.txt")"
schemas="$(sed -n 's/^level 6 with event_data and schema validation on: \([0-9]*\) events\/s, \([0-9.]*\) of validation off.*/\1 events\/s, \2 of validation off/p' "$work/hot_path.txt")"
thrpt() { grep -A3 -E "decode/$1( |\$)" "$work/decode.txt" | grep -m1 'thrpt' | sed -E 's/.*thrpt: *\[[^ ]+ [^ ]+ ([^ ]+ [^ ]+) .*/\1/'; }
decode="$(thrpt plain_records_1000) plain; $(thrpt kpl_aggregates_10x100) user records from KPL ($(thrpt kpl_aggregates_10x100_bytes))"
writes="$(awk -F'|' '/^ratio/ {gsub(/ /, "", $2); print $2}' "$work/live_state.txt")"
latency="$(grep -o 'p50 [0-9]* ms, p99 [0-9]* ms' "$work/live_state.txt")"
load="$(grep -o 'end to end: [0-9]* rows/s' "$work/load.txt" | sed 's/end to end: //')"
heat="$(grep -o 'Png: median [0-9.]* s' "$work/heatmap.txt" | sed 's/Png: median //')"
backfill="$(grep -o '^backfill: [0-9]* rows/s' "$work/backfill.txt" | sed 's/backfill: //')"
takeover() { grep "^$2 with LEASE_FAILOVER_SECS=$1:" "$work/takeover.txt" | sed -E 's/.*survivor after ([^)]*\)).*delivered after ([^)]*\)).*/leases \1; new records delivered \2/'; }
checks="$(grep '^check:' "$work/sustained.txt" | sed 's/check: *//' | paste -sd ';' | sed 's/;/; /')"
{
  echo "# Performance"
  echo
  echo "Written by \`docs/performance.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)). Every figure comes from the command beside it; rerun the script to reproduce them (this machine's figures vary by up to 30% between runs)."
  echo
  echo "| figure | value | command |"
  echo "|---|---|---|"
  row "Hot path at gzip level 6 (one core: parse, validate, normalize, gzip)" "$hot6" hot_path
  row "The same with a 300-byte event_data on every event (checked, kept verbatim)" "$event_data" hot_path
  row "The same with SCHEMA_MODE=strict and a JSON Schema checking every field of each event type" "$schemas" hot_path
  row "Kinesis record decoding (plain; KPL de-aggregation)" "$decode" decode
  row "DynamoDB writes per 1,000 events, ours / the seed design" "$writes" live_state
  row "PutRecords → LevelState latency" "$latency" live_state
  row "Warehouse load with dedupe, 100,000-row batches into 1,000,000 rows" "$load" load
  row "Backfill of 1,000,000 events (5% duplicates) from 100 lake files into an empty warehouse, default batches" "$backfill" backfill
  row "Heat map on 1,000,000 events (query to PNG)" "$heat" heatmap
  row "Lease takeover after a worker dies without release, LEASE_FAILOVER_SECS=10 (the default)" "$(takeover 10 takeover)" takeover
  row "The same, LEASE_FAILOVER_SECS=3 (the minimum)" "$(takeover 3 takeover)" takeover
  row "Graceful hand-off: a worker stopped (SIGTERM) until the survivor reads its shards (the Java KCL's users report 30–40 s, awslabs/amazon-kinesis-client#845)" "$(takeover 10 'graceful hand-off')" takeover
  row "Sustained load: 60 s at 1,000 events/s, the demo's checks" "$checks" sustained
  while read -r service kib; do
    cap=""
    [ "$service" = s3-connector ] && cap=" (BUFFER_MEMORY_CAP_MIB: 512 MiB by default; the demo runs with 256 KiB batches)"
    row "Peak RSS of $service under that load (debug build)" "$((kib / 1024)) MiB$cap" sustained
  done <"$work/rss.txt"
  echo
  echo "## The shard consumer at scale"
  echo
  echo "By the deterministic simulator (\`$(cat "$work/scale.cmd")\`): the real consumer on an in-memory stream and lease table, no faults, no records (a checkpoint is the same write in any design), failover 10 s. *Balanced*: every lease held by a running worker, each holding ⌊n/w⌋ or ⌈n/w⌉. The rolling deploy starts a tenth of the fleet anew, then stops a tenth of the old workers gracefully once balanced, until all are replaced. Table traffic is measured over an hour once balanced; the KCL 2.x figures are computed from its defaults (each lease renewed every 3.31 s, each worker scanning the whole table every 20.05 s, eventually consistent), with on-demand prices of us-east-1 (\$0.625 per million writes, \$0.125 per million reads)."
  echo
  # Two tables: a blank line between them.
  grep '^|' "$work/scale.txt" | awk 'NR > 1 && /^\| shards × workers \| design/ { print "" } { print }'
  echo
  echo "## Raw output"
  for name in hot_path decode live_state load backfill heatmap takeover; do
    echo
    echo "\`$(cat "$work/$name.cmd")\`"
    echo
    echo '```'
    grep -v -E '^(\s*$|Benchmarking|Gnuplot|Warning|WARNING)' "$work/$name.txt" | tail -n 40
    echo '```'
  done
  echo
  echo "\`$(cat "$work/sustained.cmd")\`, the summary and the peak RSS (KiB):"
  echo
  echo '```'
  sed -n '/^sent:/,/^\/.*png:/p' "$work/sustained.txt"
  cat "$work/rss.txt"
  echo '```'
} >"$out"
say "wrote $out"
