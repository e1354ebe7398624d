#!/usr/bin/env bash
# Multi-node pretraining with the deepspeed launcher and a hostfile.
#
#   launch/train.sh [LAUNCHER OPTIONS] -- TRAINER ARGS
#   launch/train.sh --hostfile launch/hostfile -- --data DIR --preset llama-1b --output RUN [--set key=value ...]
#   launch/train.sh --hostfile launch/hostfile --exclude gpu-node-04 -- --data DIR --preset llama-1b --output RUN
#
# With ssh (default): run once, on the first host; the launcher starts every node over pdsh/ssh.
# Without ssh: run the same command on every node with NODE_RANK=0..N-1 (and the same MASTER_ADDR); each
# invocation starts its own node's ranks (`deepspeed --no_ssh --node_rank`).
#
# LAUNCHER OPTIONS are passed to `deepspeed` verbatim (--include, --exclude, --num_nodes, --num_gpus,
# --launcher openmpi|slurm|..., --bind_cores_to_rank, ...). Environment:
#   HOSTFILE     hostfile, if --hostfile is not given          [launch/hostfile when present]
#   MASTER_ADDR  rank 0's address                              [the first host of the hostfile, else 127.0.0.1]
#   MASTER_PORT  rendezvous port                               [a free port of this machine; 29500 with NODE_RANK]
#   NODE_RANK    set it to launch this node only, without ssh
#   LOG_DIR      one log file per rank, plus the launcher's     [<--output>/logs]
#   DEEPSPEED    the launcher command                          [deepspeed]
# Every node gets this shell's NCCL_*, GLOO_*, DS_*, TORCH_*, PRETRAIN_*, OMP_NUM_THREADS, CUDA_*, PYTHONPATH, PATH:
# they are written to LOG_DIR/deepspeed_env, which the launcher exports on each node it starts.
#
# Stopping: SIGTERM/SIGINT/SIGUSR1 to this script are passed to this node's trainer ranks (launch/lib.sh),
# which checkpoint at the next step boundary and exit 0; so does `kill` of the `deepspeed` process itself (the
# ranks notice their launcher is gone). Ctrl-C once saves and stops; twice aborts at once.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEEPSPEED=${DEEPSPEED:-deepspeed}
launcher_args=()
while [[ $# -gt 0 && $1 != "--" ]]; do
  case $1 in
    -H | --hostfile) HOSTFILE=$2; shift 2 ;;
    --hostfile=*) HOSTFILE=${1#*=}; shift ;;
    *) launcher_args+=("$1"); shift ;;
  esac
done
[[ ${1:-} == "--" ]] || { echo "usage: $0 [launcher options] -- --data DIR --preset NAME --output RUN ..." >&2; exit 2; }
shift
trainer_args=("$@")
# shellcheck source=launch/lib.sh
source "$REPO/launch/lib.sh"

first_host() {
  awk '!/^[[:space:]]*(#|$)/ { print $1; exit }' "$1"
}

HOSTFILE=${HOSTFILE:-$([[ -f $REPO/launch/hostfile ]] && echo "$REPO/launch/hostfile" || true)}
if [[ -n $HOSTFILE ]]; then
  [[ -f $HOSTFILE ]] || { echo "hostfile $HOSTFILE not found; copy launch/hostfile.example and edit it" >&2; exit 2; }
  launcher_args=(--hostfile "$HOSTFILE" "${launcher_args[@]}")
fi
MASTER_ADDR=${MASTER_ADDR:-$([[ -n $HOSTFILE ]] && first_host "$HOSTFILE" || echo 127.0.0.1)}
# Run once on the first host, this script picks the port there; launched per node (NODE_RANK), every node must name
# the same one, which only MASTER_PORT can do
MASTER_PORT=${MASTER_PORT:-$([[ -n ${NODE_RANK:-} ]] && echo 29500 || free_port)}
# the run directory from the trainer's --output decides where the logs go
run_dir=$(trainer_output "${trainer_args[@]}")
LOG_DIR=${LOG_DIR:-${run_dir:-$REPO/runs/default}/logs}
mkdir -p "$LOG_DIR"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# KEY=VALUE lines the launcher exports on every node it starts over ssh. DS_ENV_FILE is the file name the
# launcher looks for in $HOME and in the working directory; an absolute path points it at this run's copy
# instead of a shared ~/.deepspeed_env.
write_env_file() {
  env | grep -E '^(NCCL_|GLOO_|DS_|TORCH_|CUDA_|OMP_NUM_THREADS=|PYTHONPATH=|PATH=|LD_LIBRARY_PATH=|HF_|PRETRAIN_)' \
    | grep -v '^DS_ENV_FILE=' | sort >"$1"
}
export DS_ENV_FILE="$LOG_DIR/deepspeed_env"
write_env_file "$DS_ENV_FILE"

launcher_args+=(--master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --enable_each_rank_log "$LOG_DIR")
if [[ -n ${NODE_RANK:-} ]]; then
  launcher_args+=(--no_ssh --node_rank "$NODE_RANK")
fi

cd "$REPO"
log="$LOG_DIR/launcher-node${NODE_RANK:-0}.log"  # appended: a relaunch never erases an earlier launch's log
echo "deepspeed ${launcher_args[*]} --module pretrain.train ${trainer_args[*]}" | tee -a "$log"
echo "per-rank logs: $LOG_DIR/*_rank<N>.log; environment for every node: $DS_ENV_FILE" | tee -a "$log"
launched="$LOG_DIR/.launched"  # errors the ranks record after this are this launch's
touch "$launched"
status=0
# tee -i: a Ctrl-C must not kill the pipe the ranks still write to while they save
run_forwarding_signals "$DEEPSPEED" "${launcher_args[@]}" --module pretrain.train "${trainer_args[@]}" \
  > >(tee -i -a "$log") 2>&1 || status=$?
# each rank's output went to its log file: a failed rank's error reaches the console from its record
((status == 0)) || report_rank_errors "${run_dir:-.}" "$launched"
exit "$status"
