#!/usr/bin/env bash
# Soak: one long training on 2 CPU ranks with no restart loop, so any abort fails it (issue 23: the ZeRO-3
# "LinearFunctionForZeroStage3Backward returned an invalid gradient" abort came about once in a few hundred steps).
#
#   nice -n 10 bash benchmarks/soak_train.sh OUT [--set key=value ...]     # from the repository root
#
# ZeRO-3 (ds_configs/zero3_cpu.json), activation checkpointing of every block, the debug preset at seq_len 32 with
# two micro-batches per rank per step (as in the abort's reports), bf16 unless PRECISION=fp32, an evaluation every
# EVAL steps (the abort followed an evaluation: the prefetch trace is recorded again after one). Environment:
#   STEPS      training steps                              [5000]
#   EVAL       train.eval_interval                         [10]
#   PRECISION  train.precision: bf16 or fp32               [bf16]
#   DATA       a dataset folder (pipeline run)             [built into OUT/data from the built-in corpus]
#   PYTHON     interpreter with this project installed     [python3]
# Prints `soak: ok: N steps, E evaluations, S s` and exits 0, or `soak: FAILED ...` with the log's last lines, exit 1.
set -euo pipefail

OUT=${1:?usage: soak_train.sh OUT [--set key=value ...]}
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-5000}
EVAL=${EVAL:-10}
PRECISION=${PRECISION:-bf16}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
cd "$ROOT"

DATA=${DATA:-$OUT/data}
if [[ ! -f $DATA/manifest.json ]]; then
  "$PYTHON" -m data_pipeline.cli demo-corpus "$OUT/corpus.jsonl"
  "$PYTHON" -m data_pipeline.cli run --input "$OUT/corpus.jsonl" --output "$DATA" \
    --config "$OUT/corpus.recipe.yaml" --set tokenizer.vocab_size=512 --set shards.validation_fraction=0.02
fi

RUN=$OUT/run
LOG=$OUT/soak.log
rm -rf "$RUN"
started=$SECONDS
status=0
"$PYTHON" -m torch.distributed.run --nproc_per_node 2 --master_port "$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
  -m pretrain.train --data "$DATA" --preset debug --output "$RUN" \
  --set model.seq_len=32 --set train.global_batch_tokens=256 --set train.max_steps="$STEPS" \
  --set train.eval_interval="$EVAL" --set train.save_interval=1000 --set train.precision="$PRECISION" \
  --set train.activation_checkpointing=every --set log.interval=100 --set log.tensorboard=false \
  --set data.val_samples=8 "$@" >"$LOG" 2>&1 || status=$?

last=$(grep -o '^step [0-9]*/' "$LOG" | tail -1 | tr -dc 0-9)
evals=$(grep -c 'val_loss' "$LOG" || true)
if [[ $status != 0 || ${last:-0} != "$STEPS" ]] || grep -q "invalid gradient" "$LOG"; then
  echo "soak: FAILED: exit status $status, last logged step ${last:-none} of $STEPS ($LOG):"
  tail -n 20 "$LOG"
  exit 1
fi
echo "soak: ok: $STEPS steps, $evals evaluations, $((SECONDS - started)) s, precision $PRECISION, 2 ranks ($LOG)"
