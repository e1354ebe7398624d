#!/usr/bin/env bash
# `make demo`: the whole system on the built-in corpus, on whatever this machine has.
#   built-in corpus -> pipeline run (filter, exact + near dedup, SentencePiece, Arrow shards)
#   -> ZeRO-3 + bf16 + activation checkpointing on 2 CPU ranks (or every local GPU)
#   -> validation perplexity before/after -> a generated sample -> the training plot.
# Settings: DEMO_OUT (folder, default demo_out), DEMO_STEPS (default 300), DEMO_VOCAB (default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${DEMO_OUT:-demo_out}
STEPS=${DEMO_STEPS:-300}
VOCAB=${DEMO_VOCAB:-4096}
DATA=$OUT/data
RUN=$OUT/run
mkdir -p "$OUT"
started=$SECONDS
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning}  # torch deprecations inside DeepSpeed, once per call
step() { printf '\n== [%3ss] %s\n' "$((SECONDS - started))" "$*"; }

step "1/6 built-in corpus: Python's own documentation -> $OUT/corpus.jsonl"
pipeline demo-corpus "$OUT/corpus.jsonl"

step "2/6 corpus pipeline: filters, exact + MinHash-LSH dedup, SentencePiece (vocab $VOCAB), token shards"
pipeline run --input "$OUT/corpus.jsonl" --output "$DATA" --config "$OUT/corpus.recipe.yaml" \
  --set tokenizer.vocab_size="$VOCAB" --set shards.validation_fraction=0.02
pipeline inspect "$DATA" | head -n 20

# debug preset widened a little so the sample reads like something; 2 ranks x 16 x 128 tokens x 2 accumulation.
# A demo trains from scratch: the previous demo's run folder goes (the trainer refuses to overwrite checkpoints).
rm -rf "$RUN"
TRAIN_ARGS=(--data "$DATA" --preset debug --output "$RUN"
  --set model.d_model=128 --set model.n_layer=4 --set model.n_head=4
  --set train.global_batch_tokens=8192 --set train.micro_batch_size=16
  --set train.max_steps="$STEPS" --set train.eval_interval=100 --set train.save_interval=100
  --set optim.lr=3e-3 --set optim.warmup_steps=30 --set data.val_samples=64 --set log.interval=25
  --set train.precision=bf16 --set train.activation_checkpointing=every)
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -gt 0 ]; then
  step "3/6 training on $GPUS local GPU(s): deepspeed --module pretrain.train (ZeRO-3, bf16, activation checkpointing)"
  deepspeed --num_gpus "$GPUS" --module pretrain.train "${TRAIN_ARGS[@]}" \
    --set train.global_batch_tokens=$((GPUS * 4096)) 2>&1 | tee "$OUT/train.log"
else
  step "3/6 training on 2 CPU ranks (gloo): ZeRO-3, bf16, activation checkpointing"
  # under the restart loop: a run that dies continues from its newest checkpoint (see RELIABILITY.md; DeepSpeed
  # 0.19.8's ZeRO-3 + activation checkpointing on CPU has aborted a rank mid-backward about once in a few
  # hundred steps here, "LinearFunctionForZeroStage3Backward returned an invalid gradient")
  DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 launch/restart.sh --max-restarts 2 --backoff 1 -- \
    python -m torch.distributed.run --nproc_per_node 2 --master_port "${MASTER_PORT:-29517}" \
    -m pretrain.train "${TRAIN_ARGS[@]}" 2>&1 | tee "$OUT/train.log"
fi

step "4/6 validation perplexity, before and after training"
python - "$RUN/metrics.csv" <<'EOF'
import csv, math, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("val_loss")]
first, last = rows[0], rows[-1]
before, after = math.exp(float(first["val_loss"])), math.exp(float(last["val_loss"]))
print(f"validation perplexity: step {first['step']}: {before:.1f} -> step {last['step']}: {after:.1f} ({before / after:.1f}x lower)")
sys.exit(0 if after < before / 5 else "validation perplexity did not fall far below its start")
EOF

step "5/6 a sample from the trained model"
DS_ACCELERATOR=cpu pretrain generate "$RUN" --prompt "The built-in function" --max-new-tokens 60 --seed 0

step "6/6 the training plot"
pretrain plot "$RUN"

step "done in $((SECONDS - started)) s. Everything is under $OUT/:"
cat <<EOF
  corpus           $OUT/corpus.jsonl
  dataset          $DATA  (stats.json, rejects/, dedup/clusters.jsonl, tokenizer/, shards/, manifest.json)
  run              $RUN   (config.yaml, ds_config.json, checkpoints/, metrics.csv, tensorboard/, plot.png)
  export to HF     pretrain export $RUN $OUT/hf --format hf
EOF
