#!/usr/bin/env bash
# Writes docs/configuration.md from the binaries' own `--help`, so the reference is
# never anything but what the code says. tests/tests/readme.rs renders the same help
# from the code and fails, naming this script, when the file is stale.
#
#   docs/configuration.sh    # builds the binaries, then writes docs/configuration.md
#
# The help is rendered 100 columns wide whatever the terminal: clap wraps to the width
# of any terminal on stdin, stdout or stderr, so none of them is one here, and COLUMNS
# decides. The environment is empty, or clap would show the values of the variables
# set in it (`eval "$(deploy/local/env)"` sets a dozen).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

out=docs/configuration.md
bins=target/debug
services=(s3-connector redshift-connector cron-connector player-state-worker)

cargo build --quiet --bins

err=$(mktemp)
trap 'rm -f "$err"' EXIT

# `help BINARY [SUBCOMMAND…]`: the long help, trailing spaces removed.
help() {
  local text
  if ! text=$(env -i COLUMNS=100 "$bins/$1" "${@:2}" --help </dev/null 2>"$err"); then
    echo "$* --help failed:" >&2
    cat "$err" >&2
    exit 1
  fi
  printf '%s\n' "$text" | sed 's/[[:space:]]*$//'
}

# `subcommands BINARY [SUBCOMMAND…]`: the subcommands its help lists, except `help`.
subcommands() {
  help "$@" | awk '
    /^Commands:/ { listing = 1; next }
    listing && /^[^ ]/ { listing = 0 }
    listing && /^  [a-z][a-z0-9-]*  / && $1 != "help" { print $1 }'
}

# What `--help` cannot say: how settings relate, and hints for running them.
notes() {
  case "$*" in
  s3-connector)
    cat <<'EOF'
The defaults make large files (what Redshift COPY likes). For a demo, or a quiet game,
use `BATCH_MAX_KIB=256 BATCH_MAX_RECORDS=1000 BATCH_MAX_AGE_SECS=5`.
EOF
    ;;
  redshift-connector)
    cat <<'EOF'
For a demo: `LOAD_MAX_FILES=10 LOAD_MAX_AGE_SECS=5`. `LOAD_MAX_FILES` is refused at start
when a load of that many files would not fit one Data API request (100,000 characters
per statement, 40 statements). `WAREHOUSE_TLS` is `require` for Redshift and `disable`
for a local PostgreSQL (`deploy/local/env` sets it). How dead letters are handled and
redriven: [operations](operations.md#dead-letters).
EOF
    ;;
  cron-connector)
    cat <<'EOF'
`LEASE_FAILOVER_SECS`, `WORKER_ID` and `CREATE_LEASE_TABLES` apply to its singleton lease
as to shard leases. The schedules are cron in UTC (5 fields, or 6 with seconds) or
`off`. The VACUUM is, on Redshift, `VACUUM DELETE ONLY` then `SORT ONLY … TO 95 PERCENT`,
on PostgreSQL `VACUUM (ANALYZE)`; ANALYZE covers `events` and `loaded_files`. Keep
`LOADED_FILES_RETENTION_DAYS` above the `files` stream's retention: a pointer replayed
after its file was forgotten would load again (the event-id dedupe still drops its rows
within the batch's time window).
EOF
    ;;
  player-state-worker)
    cat <<'EOF'
`STAGES` lets the stages scale apart: run processes with one stage each. The Snowplow
context (`SNOWPLOW_LEVEL_CONTEXT`) holds `user_id` and `level_slug` (the tracker's and
the enrichments' items, as the Analytics SDK merges them; of several, the last with
both, as the tutorial's Lambda); a Snowplow event's time is `collector_tstamp`.
`IDLE_TIMEOUT_SECS` also drops events older than it, which would bring a pruned player
back. One instance prunes at a time (the pruner's singleton lease). The tables:
[data](data.md#live-game-state).
EOF
    ;;
  pipelinectl)
    cat <<'EOF'
The operator CLI; what each command is for: [pipelinectl](pipelinectl.md). A
subcommand's own variables carry its name (`SETUP_VERIFY` is `setup --verify`).
EOF
    ;;
  "pipelinectl setup")
    cat <<'EOF'
`setup` creates the streams, the bucket, and the tables (on-demand billing): PlayerState
with a `NEW_AND_OLD_IMAGES` stream, LevelState, Transitions with TTL on `expiresAt`, and
one lease table per lease application in the Java KCL 2.x layout (hash key `leaseKey`),
each with its worker table `<lease table>-workers` (hash key `workerId`). Run twice, it
changes nothing; a resource that exists in another shape is reported, never reshaped.
Then, as the warehouse's owner, it migrates the schema and grants
`WAREHOUSE_LOADER_USERS` and `WAREHOUSE_READER_USERS`; `SETUP_WAREHOUSE_ONLY` does only
that, where the templates made the rest ([deploy](deploy.md#warehouse-users)).
EOF
    ;;
  "pipelinectl generate")
    cat <<'EOF'
With `--output-file`, event times start at 2026-01-01T00:00:00Z and advance by 1/rate s
per event, so a seed always writes the same bytes. `--json`'s object holds `events`,
`duplicates`, `malformed`, `malformed_records` (the rejects to expect) and
`distinct_valid` (the warehouse rows to expect), among others.
EOF
    ;;
  "pipelinectl heatmap")
    cat <<'EOF'
`--format csv` writes `column,row,x_min,y_min,x_max,y_max,events` for every cell;
`--output -` writes to standard output (CSV only).
EOF
    ;;
  esac
}

# `section LEVEL BINARY [SUBCOMMAND…]`: a heading, the notes and the help, then the
# same for each subcommand one level deeper.
section() {
  local level=$1
  shift
  printf '%s `%s`\n\n' "$level" "$*"
  local text
  text=$(notes "$@")
  if [ -n "$text" ]; then
    printf '%s\n\n' "$text"
  fi
  local usage
  usage=$(help "$@")
  printf '```text\n%s\n```\n\n' "$usage"
  local sub
  for sub in $(subcommands "$@"); do
    section "$level#" "$@" "$sub"
  done
}

document=$(
  cat <<'EOF'
# Configuration

Written by `docs/configuration.sh` from each binary's `--help`; do not edit by hand:
change the settings' doc comments in the code, then rerun the script
(`cargo test -p pipeline-tests --test readme` fails while this file is stale).

Every setting is an env var and the matching `--flag`; `<binary> --help` lists them all
with their defaults. A bad value stops the binary at start with a message that names the
variable. Durations carry their unit in the name. Credentials come from the AWS SDK's
default chain: env vars, profile, ECS task role, instance profile. `deploy/local/env`
sets what the local stack needs ([local stack](local-stack.md)).

Settings every service shares: logging (`LOG_FORMAT`, `LOG_LEVEL`), metrics
(`METRICS_NAMESPACE`, `METRICS_FLUSH_INTERVAL_SECS`), `HEALTH_ADDR`,
`SHUTDOWN_DEADLINE_SECS` (keep ECS `stopTimeout` above it) and the AWS client's
(`AWS_REGION`, the `AWS_ENDPOINT_URL*` overrides, `S3_FORCE_PATH_STYLE`, timeouts and
attempts). Every stream consumer also has the shard consumer's (`LEASE_FAILOVER_SECS` to
`WORKER_ID`), explained in [architecture](architecture.md#how-streams-are-consumed).

EOF
  for service in "${services[@]}"; do
    section '##' "$service"
  done
  section '##' pipelinectl
)
printf '%s\n' "$document" >"$out"
echo "wrote $out"
