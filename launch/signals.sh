# Sourced by launch/train.sh and launch/mpi.sh: pass SIGTERM, SIGINT and SIGUSR1 sent to the script on to the
# trainer ranks it started on this node, so they checkpoint at the next step boundary and exit 0 (pretrain/signals.py).
#
#   run_forwarding_signals COMMAND ARGS...   # runs COMMAND in the background, forwards, returns its exit status
#
# The ranks are signalled directly, not the launcher: the `deepspeed` command ignores SIGTERM and dies, and
# its per-node launcher would SIGKILL ranks still saving after 30 s. Ranks on other nodes learn of the request at
# the same step boundary (the trainer all-reduces it). A rank is a descendant of COMMAND whose command line runs
# pretrain.train.

# shellcheck shell=bash
job_pid=""

# Every descendant of pid $1 that is `python [options] -m pretrain.train ...`.
trainer_ranks() {
  ps -eo pid=,ppid=,args= | awk -v root="$1" '
    { parent[$1] = $2; line = $0; sub(/^ *[0-9]+ +[0-9]+ +/, "", line); args[$1] = line }
    END {
      for (pid in parent) {
        up = parent[pid]
        while (up != root && up in parent && up > 1) up = parent[up]
        if (up == root && args[pid] ~ /^[^ ]*python[0-9.]* (-[A-Za-z]+ )*-m pretrain[.]train( |$)/) print pid
      }
    }'
}

forward_signal() {
  local sig=$1 pid
  [[ -n $job_pid ]] || return 0
  echo "$(basename "$0"): $sig: passing it to the trainer ranks (they checkpoint at the next step boundary)" >&2
  for pid in $(trainer_ranks "$job_pid"); do kill -s "$sig" "$pid" 2>/dev/null || true; done
}

run_forwarding_signals() {
  trap 'forward_signal TERM' TERM
  trap 'forward_signal INT' INT
  trap 'forward_signal USR1' USR1
  "$@" &
  job_pid=$!
  local status=0
  wait "$job_pid" || status=$?
  while kill -0 "$job_pid" 2>/dev/null; do  # a trapped signal interrupts `wait`; wait for the job itself
    status=0
    wait "$job_pid" || status=$?
  done
  job_pid=""
  return "$status"
}
