#!/usr/bin/env bash
# Restart loop: relaunch a training job that died (a rank killed, a node lost, a collective timeout) so it
# continues from its newest complete, verified checkpoint.
#
#   launch/restart.sh [--max-restarts N] [--backoff S] [--max-backoff S] -- LAUNCH COMMAND ...
#   launch/restart.sh --max-restarts 5 -- launch/train.sh --hostfile H -- --data DIR --preset llama-1b --output RUN
#   launch/restart.sh -- python -m torch.distributed.run --nproc_per_node 8 -m pretrain.train --data D --output R
#
# Every relaunch appends `--resume auto` to the command (the trainer's argparse takes the last one), so the
# command must end with trainer arguments. The job is relaunched only on statuses a restart can fix:
#   0                      done, stop
#   2  (bad config/path)   stop: it would fail the same way again
#   3  (train.max_bad_steps non-finite steps in a row) stop: the same data would diverge again
#   anything else          (SIGKILL'd rank -> launcher non-zero, collective timeout = 4, OOM, node loss) restart;
#                          also 5 (run folder locked): a dead job's lock on another node goes stale meanwhile
# Back-off doubles from --backoff up to --max-backoff seconds. SIGTERM/SIGINT to this script are forwarded to
# the job (which checkpoints and exits 0 on SIGTERM) and end the loop. Environment for the job:
#   PRETRAIN_RESTART_COUNT   0 on the first launch, then 1, 2, ...
#   PRETRAIN_RESTART_ID      one id per loop: a relaunch takes over the run folder's lock an earlier attempt left
set -uo pipefail

max_restarts=${MAX_RESTARTS:-3}
backoff=${BACKOFF_S:-10}
max_backoff=${MAX_BACKOFF_S:-300}
while [[ $# -gt 0 && $1 != "--" ]]; do
  case $1 in
    --max-restarts) max_restarts=$2; shift 2 ;;
    --backoff) backoff=$2; shift 2 ;;
    --max-backoff) max_backoff=$2; shift 2 ;;
    *) echo "restart.sh: unknown option $1; usage: $0 [--max-restarts N] [--backoff S] -- COMMAND ..." >&2; exit 2 ;;
  esac
done
[[ ${1:-} == "--" && $# -ge 2 ]] || { echo "usage: $0 [--max-restarts N] [--backoff S] -- COMMAND ..." >&2; exit 2; }
shift
command=("$@")
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The trainer's --output folder: its heartbeat/ files say which rank stopped first when a job fails.
report_ranks() {
  local run dir
  run=$(trainer_output "${command[@]}")
  dir="$run/heartbeat"
  [[ -n $run && -d $dir ]] || return 0
  echo "restart.sh: last heartbeat of each rank, oldest first (the first to stop is the likely cause):" >&2
  local f
  for f in $(ls -tr "$dir"); do
    echo "  $f: $(tr -d '\n' <"$dir/$f"), last beat $(date -r "$dir/$f" +%H:%M:%S)" >&2
  done
}

child=""
stopping=0
forward() {
  stopping=1
  [[ -n $child ]] && kill -TERM "$child" 2>/dev/null
}
trap forward TERM INT

attempt=0
delay=$backoff
export PRETRAIN_RESTART_ID="${HOSTNAME:-host}-$$-$(date +%s)"
while true; do
  export PRETRAIN_RESTART_COUNT=$attempt
  if ((attempt == 0)); then "${command[@]}" & else "${command[@]}" --resume auto & fi
  child=$!
  wait "$child"; status=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done  # a trapped signal interrupts wait
  child=""
  ((status == 0)) || report_ranks
  if ((status == 0 || status == 2 || status == 3 || stopping)); then
    ((status == 0)) || echo "restart.sh: job exited with status $status; not restarting" >&2
    exit "$status"
  fi
  if ((attempt >= max_restarts)); then
    echo "restart.sh: job exited with status $status after $attempt restarts (--max-restarts $max_restarts); giving up" >&2
    exit "$status"
  fi
  attempt=$((attempt + 1))
  echo "restart.sh: job exited with status $status; restart $attempt/$max_restarts in ${delay}s with --resume auto" >&2
  sleep "$delay"
  delay=$((delay * 2 > max_backoff ? max_backoff : delay * 2))
done
