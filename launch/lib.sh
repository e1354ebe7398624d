# Sourced by the launch scripts: what more than one of them needs, written once.
#
#   trainer_output ARGS...                   # the value of the trainer's --output in ARGS (empty if none)
#   slurm_tasks_per_node                     # inside a SLURM job: tasks per node, as srun/mpiexec -ppn take it
#   run_forwarding_signals COMMAND ARGS...   # runs COMMAND in the background, forwards, returns its exit status
#   free_port                                # a TCP port free on this machine now: the rendezvous port of a job
#   report_rank_errors RUN MARKER            # print RUN/errors/rank*.txt written since MARKER (a file) on stderr
#
# run_forwarding_signals passes SIGTERM, SIGINT and SIGUSR1 sent to the script on to the trainer ranks COMMAND
# started on this node, so they checkpoint at the next step boundary and exit 0 (pretrain/signals.py). The ranks
# are signalled directly, not the launcher: the `deepspeed` command ignores SIGTERM and dies, and its per-node
# launcher would SIGKILL ranks still saving after 30 s. Ranks on other nodes learn of the request at the same step
# boundary (the trainer all-reduces it). A rank is a descendant of COMMAND whose command line runs pretrain.train.

# shellcheck shell=bash
job_pid=""

# The trainer's --output folder in a command line: `--output DIR` or `--output=DIR`; the last one wins, as in the
# trainer's argparse. Prints nothing when there is none.
trainer_output() {
  local prev="" arg output=""
  for arg in "$@"; do
    [[ $prev == "--output" ]] && output=$arg
    [[ $arg == --output=* ]] && output=${arg#*=}
    prev=$arg
  done
  [[ -n $output ]] && echo "$output"
  return 0
}

# Tasks per node of this SLURM job: SLURM_NTASKS_PER_NODE when --ntasks-per-node was given, else the job's tasks
# spread evenly over its nodes (the scripts' launch lines need one number).
slurm_tasks_per_node() {
  echo "${SLURM_NTASKS_PER_NODE:-$((SLURM_NTASKS / SLURM_JOB_NUM_NODES))}"
}

# A port nothing listens on here now, from the kernel's ephemeral range (bind to port 0), so two jobs on one machine
# never share the launchers' default 29500. A job started in the instant between this and its own bind is refused
# by the trainer, naming the port (pretrain/rendezvous.py).
free_port() {
  "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# The errors the trainer ranks recorded (pretrain/rank_errors.py) since MARKER was touched, i.e. by this launch: the
# console's only copy when the ranks' own output went to files.
report_rank_errors() {
  local run=$1 marker=$2 file
  [[ -d $run/errors ]] || return 0
  for file in $(find "$run/errors" -name 'rank*.txt' -newer "$marker" | sort -V); do
    echo "$(basename "$0"): $file:" >&2
    sed 's/^/  /' "$file" >&2
  done
}

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
