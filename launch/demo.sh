#!/usr/bin/env bash
# `make demo`: the whole system on the built-in corpus, on whatever this machine has.
#   built-in corpus, split into two sources: prose, and code (its code blocks and doctests)
#   -> pipeline run on prose (filter, exact + near dedup, SentencePiece, Arrow shards)
#   -> pipeline run on code with the prose tokenizer (tokenizer.from): one tokenizer, so the two form a mixture
#   -> ZeRO-3 + bf16 + activation checkpointing on 2 CPU ranks (or every local GPU), on prose=0.7 code=0.3
#   -> validation perplexity before/after, per source -> a generated sample -> the training plot.
# Settings: DEMO_OUT (folder, default demo_out), DEMO_STEPS (default 300), DEMO_VOCAB (default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/lib.sh  # free_port: a second demo or run on this machine never shares the rendezvous port

OUT=${DEMO_OUT:-demo_out}
STEPS=${DEMO_STEPS:-300}
VOCAB=${DEMO_VOCAB:-4096}
PROSE=$OUT/prose
CODE=$OUT/code
RUN=$OUT/run
mkdir -p "$OUT"
started=$SECONDS
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning}  # torch deprecations inside DeepSpeed, once per call
step() { printf '\n== [%3ss] %s\n' "$((SECONDS - started))" "$*"; }

step "1/7 built-in corpus: Python's own documentation -> $OUT/corpus.jsonl, split into prose and code"
pipeline demo-corpus "$OUT/corpus.jsonl"
# a paragraph (blank-line separated) is code when it starts a doctest (>>>) or all its lines are indented
python - "$OUT/corpus.jsonl" "$OUT/prose.jsonl" "$OUT/code.jsonl" <<'EOF'
import json, sys
def is_code(paragraph):
    lines = [line for line in paragraph.split("\n") if line.strip()]
    return lines[0].lstrip().startswith(">>>") or all(line.startswith(("   ", "\t")) for line in lines)
with open(sys.argv[1]) as corpus, open(sys.argv[2], "w") as prose, open(sys.argv[3], "w") as code:
    for line in corpus:
        doc = json.loads(line)
        paragraphs = [p for p in doc["text"].split("\n\n") if p.strip()]
        for out, wanted in ((prose, False), (code, True)):
            text = "\n\n".join(p for p in paragraphs if is_code(p) == wanted)
            if text:
                out.write(json.dumps(doc | {"text": text}, ensure_ascii=False) + "\n")
EOF
wc -l "$OUT/prose.jsonl" "$OUT/code.jsonl"

step "2/7 corpus pipeline on prose: filters, exact + MinHash-LSH dedup, SentencePiece (vocab $VOCAB), token shards"
pipeline run --input "$OUT/prose.jsonl" --output "$PROSE" --config "$OUT/corpus.recipe.yaml" \
  --set tokenizer.vocab_size="$VOCAB" --set shards.validation_fraction=0.02
pipeline inspect "$PROSE" | head -n 20

step "3/7 corpus pipeline on code: exact + near dedup, the prose tokenizer (tokenizer.from), token shards"
# the prose filters would drop code (few words, no sentences): code is deduplicated only
pipeline run --input "$OUT/code.jsonl" --output "$CODE" --set filters.enabled=false \
  --set tokenizer.from="$PROSE/tokenizer" --set shards.validation_fraction=0.05

# debug preset widened a little so the sample reads like something; 2 ranks x 16 x 128 tokens x 2 accumulation.
# A demo trains from scratch: the previous demo's run folder goes (the trainer refuses to overwrite checkpoints).
rm -rf "$RUN"
TRAIN_ARGS=(--data "$PROSE=0.7" --data "$CODE=0.3" --preset debug --output "$RUN"
  --set model.d_model=128 --set model.n_layer=4 --set model.n_head=4
  --set train.global_batch_tokens=8192 --set train.micro_batch_size=16
  --set train.max_steps="$STEPS" --set train.eval_interval=100 --set train.save_interval=100
  --set optim.lr=3e-3 --set optim.warmup_steps=30 --set data.val_samples=64 --set log.interval=25
  --set train.precision=bf16 --set train.activation_checkpointing=every)
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -gt 0 ]; then
  step "4/7 training on $GPUS local GPU(s): deepspeed --module pretrain.train (ZeRO-3, bf16, activation checkpointing)"
  deepspeed --num_gpus "$GPUS" --master_port "${MASTER_PORT:-$(free_port)}" --module pretrain.train "${TRAIN_ARGS[@]}" \
    --set train.global_batch_tokens=$((GPUS * 4096)) 2>&1 | tee "$OUT/train.log"
else
  step "4/7 training on 2 CPU ranks (gloo): ZeRO-3, bf16, activation checkpointing"
  DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 \
    --master_port "${MASTER_PORT:-$(free_port)}" -m pretrain.train "${TRAIN_ARGS[@]}" 2>&1 | tee "$OUT/train.log"
fi

step "5/7 validation loss and perplexity, before and after training, per source"
python - "$RUN/metrics.csv" <<'EOF'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
fell = []
for name in [column for column in rows[0] if column.startswith("val_loss/")]:
    evals = [r for r in rows if r.get(name)]
    first, last = evals[0], evals[-1]
    before, after = math.exp(float(first[name])), math.exp(float(last[name]))
    print(f"{name}: step {first['step']}: {float(first[name]):.3f} -> step {last['step']}: {float(last[name]):.3f}"
          f" (perplexity {before:.1f} -> {after:.1f}, {before / after:.1f}x lower)")
    fell.append(after < before / 5)
sys.exit(0 if len(fell) == 2 and all(fell) else "a source's validation perplexity did not fall far below its start")
EOF

step "6/7 a sample from the trained model"
DS_ACCELERATOR=cpu pretrain generate "$RUN" --prompt "The built-in function" --max-new-tokens 60 --seed 0

step "7/7 the training plot"
pretrain plot "$RUN"

step "done in $((SECONDS - started)) s. Everything is under $OUT/:"
cat <<EOF
  corpus           $OUT/corpus.jsonl
  datasets         $PROSE $CODE  (stats.json, rejects/, dedup/clusters.jsonl, tokenizer/, shards/, manifest.json)
  run              $RUN   (config.yaml, ds_config.json, checkpoints/, metrics.csv, tensorboard/, plot.png)
  export to HF     pretrain export $RUN $OUT/hf --format hf
EOF
