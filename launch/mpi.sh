#!/usr/bin/env bash
# Pretraining under mpirun/mpiexec: MPI starts the ranks, DeepSpeed's MPI discovery (mpi4py) turns them into
# torch.distributed ranks (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR from rank 0's `hostname -I`).
#
#   launch/mpi.sh -n 16 [-f hosts] -- --data DIR --preset llama-1b --output RUN [--set key=value ...]
#   NP=2 launch/mpi.sh -- --data DIR --preset debug --output RUN          # one machine, 2 ranks
#
# Options before `--` go to mpiexec verbatim (-n, -ppn, -f/-hosts for MPICH's Hydra, --hostfile for Open MPI).
# Environment:
#   NP           number of ranks when -n/-np is not given          [2]
#   MPIEXEC      the MPI launcher                                  [mpiexec next to PYTHON, else mpiexec]
#   PYTHON       interpreter with this project installed           [python3]
#   MASTER_PORT  rendezvous port the trainer passes to DeepSpeed   [a free port of this machine]
# MPICH's mpiexec propagates the whole environment to every rank (NCCL_*, DS_ACCELERATOR, ...); for Open MPI add
# `-x NCCL_DEBUG -x DS_ACCELERATOR ...`. Each rank's output is tagged with its rank (-prepend-rank / --tag-output).
# SIGTERM/SIGINT/SIGUSR1 to this script are passed to this node's trainer ranks (launch/lib.sh): they
# checkpoint at the next step boundary and exit 0 (mpiexec's own handling of SIGTERM kills the ranks outright).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
python_dir=$(dirname "$(command -v "$PYTHON")")
MPIEXEC=${MPIEXEC:-$([[ -x $python_dir/mpiexec ]] && echo "$python_dir/mpiexec" || echo mpiexec)}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

mpi_args=()
while [[ $# -gt 0 && $1 != "--" ]]; do
  mpi_args+=("$1")
  shift
done
[[ ${1:-} == "--" ]] || { echo "usage: $0 [mpiexec options] -- --data DIR --preset NAME --output RUN ..." >&2; exit 2; }
shift

[[ " ${mpi_args[*]-} " =~ " -n "|" -np " ]] || mpi_args=(-n "${NP:-2}" "${mpi_args[@]}")
if "$MPIEXEC" --version 2>&1 | grep -q "Open MPI"; then
  mpi_args+=(--tag-output)
else
  mpi_args+=(-prepend-rank)
fi

cd "$REPO"
# shellcheck source=launch/lib.sh
source "$REPO/launch/lib.sh"
export MASTER_PORT=${MASTER_PORT:-$(PYTHON=$PYTHON free_port)}  # rank 0 runs on the first host, usually this one
echo "$MPIEXEC ${mpi_args[*]} $PYTHON -u -m pretrain.train $*"
run_forwarding_signals "$MPIEXEC" "${mpi_args[@]}" "$PYTHON" -u -m pretrain.train "$@"
