"""The 2-rank ZeRO-3 CPU trainer against a single-process plain-PyTorch loop on the same model, data and schedule.

The reference below is what the trainer claims to be: AdamW (decay on matrices only), WarmupCosineLR stepped
only on applied updates, global-norm clipping at 1.0, the world-size-independent sample order, mean loss over
the global batch. Any divergence in the engine (wrong groups, wrong accumulation scaling, a skipped step
that still updates, a ZeRO partitioning bug) shows up as a loss mismatch.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from deepspeed.runtime.lr_schedules import WarmupCosineLR
from support.launch import TINY_TRAIN_SETTINGS, run_train, step_losses
from support.runs import DEEPSPEED_LAUNCHER_SETS

from data_pipeline.shards import TokenStream
from pretrain.config import load_config
from pretrain.cpu_shm import SHM_DIR, segment_name
from pretrain.data import BatchLayout, TrainSampler
from pretrain.engine import decay_groups
from pretrain.model import GPT

pytestmark = pytest.mark.slow

STEPS = 6


def reference_losses(
    data: Path, sets: tuple[str, ...], steps: int, skip: set[int] = frozenset(), record: dict | None = None
) -> dict[int, float]:
    """Plain PyTorch, one process, one forward per global batch; steps in `skip` consume data without updating.

    `record`, if given, receives the pre-clipping gradient norm of each step ("grad_norm") and the final
    parameters ("params"): a mis-scaled loss that Adam and clipping hide from the losses shows in both. Also, per
    applied step, the learning rate ("lr") and the largest query-bias gradient Adam saw ("query_bias_grad"), from
    which `assert_same_parameters` derives its tolerance."""
    cfg = load_config("debug", None, [*TINY_TRAIN_SETTINGS, *sets, f"model.vocab_size={TokenStream(data).vocab_size}"])
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model)
    opt = torch.optim.AdamW(
        decay_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps
    )
    sched = WarmupCosineLR(
        opt,
        total_num_steps=cfg.train.max_steps,
        warmup_num_steps=cfg.optim.warmup_steps,
        cos_min_ratio=cfg.optim.min_lr_ratio,
        warmup_type="linear",
    )
    sched.step()  # from "not started" to iteration 0, where the trainer's schedule (pretrain/schedule.py) starts
    global_batch = cfg.train.global_batch_tokens // cfg.model.seq_len
    sampler = TrainSampler(TokenStream(data), cfg.model.seq_len, cfg.data.seed, BatchLayout(global_batch, 1, 1), 0)
    losses = {}
    for step in range(1, steps + 1):
        x, y = sampler.micro_batch(0)
        sampler.advance()
        _, loss = model(x, y)
        losses[step] = loss.item()
        if step in skip:
            continue
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        if record is not None:
            record.setdefault("grad_norm", {})[step] = grad_norm.item()
            record.setdefault("lr", {})[step] = opt.param_groups[0]["lr"]
            query_grads = [block.attn.qkv.bias.grad[: cfg.model.d_model].abs().max() for block in model.blocks]
            record.setdefault("query_bias_grad", {})[step] = max(query_grads).item()
        opt.step()
        sched.step()
    if record is not None:
        record["params"] = {name: p.detach().clone() for name, p in model.state_dict().items()}
    return losses


def assert_close(got: dict[int, float], want: dict[int, float], rel: float, steps) -> None:
    diffs = {s: (got[s], want[s]) for s in steps if not math.isclose(got[s], want[s], rel_tol=rel)}
    assert not diffs, f"step: (zero3, reference) beyond rel {rel}: {diffs}"


@pytest.mark.parametrize(
    "micro,label",
    [(4, "no accumulation"), (1, "4 accumulation micro-steps")],
)
def test_zero3_two_ranks_match_plain_pytorch_fp32(tiny_dataset: Path, tmp_path: Path, micro: int, label: str) -> None:
    """Global batch 8 sequences: 2 ranks x micro 4 x accum 1, or 2 ranks x micro 1 x accum 4 (= one 4x batch)."""
    sets = (f"train.micro_batch_size={micro}", "train.global_batch_tokens=256", f"train.max_steps={STEPS}")
    proc = run_train(2, tiny_dataset, tmp_path / "run", sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ds = json.loads((tmp_path / "run" / "ds_config.json").read_text())
    assert ds["gradient_accumulation_steps"] == 8 // (2 * micro) and ds["train_batch_size"] == 8
    record: dict = {}
    want = reference_losses(tiny_dataset, sets, STEPS, record=record)
    assert_close(step_losses(tmp_path / "run"), want, 2e-5, range(1, STEPS + 1))
    assert want[STEPS] < want[1] - 0.05  # it trained: a run that never updated would match step 1 only
    assert_close(step_grad_norms(tmp_path / "run"), record["grad_norm"], 1e-4, range(1, STEPS + 1))
    cfg = load_config("debug", None, [*TINY_TRAIN_SETTINGS, *sets, "model.vocab_size=256"])
    assert_same_parameters(tmp_path / "run", record, cfg.train.global_batch_tokens, cfg.optim.eps, cfg.model.d_model)
    assert_end_of_run_report(proc.stdout)
    assert_console(proc, tmp_path / "run", STEPS)
    assert_partitioned(tmp_path / "run", world=2)


def step_grad_norms(run_dir: Path) -> dict[int, float]:
    """Global gradient norm before clipping per step, as the trainer logged it in RUN/metrics.csv."""
    from pretrain.metrics import read_metrics

    return {int(r["step"]): float(r["grad_norm"]) for r in read_metrics(run_dir) if "grad_norm" in r}


FP32_EPS = torch.finfo(torch.float32).eps  # 2^-23: the relative rounding of one fp32 operation


def assert_same_parameters(run_dir: Path, record: dict, summands: int, adam_eps: float, d_model: int) -> None:
    """The final checkpoint's fp32 weights equal the reference's element by element, within what fp32 allows.

    Measured (2 ranks x micro 1 x accumulation 4 against the one-batch reference, and the reference against
    itself summing 8 accumulated micro-batches instead of one batch; the same picture in both): every element
    of every tensor differs by <= 6e-8 (half an ulp of 1.0 on the LayerNorm weights), except the key third of
    each attention qkv bias, which differs by 4e-7..7e-7, as much as those key biases are large (<= 8e-7).
    The old yardstick, relative L2 <= 1e-4 per tensor, mixed the two in the 192-element qkv bias: 1.02e-4 and
    1.04e-4 on a fresh clone, 0.5e-4..1e-4 here, for any accumulation.

    Learned parameters. AdamW moves an element by about lr_t per step whatever its gradient's scale
    (|m/sqrt(v)| <~ 1), so a relative rounding r of a gradient moves it by <~ lr_t * r. Summing the gradient
    over n = global_batch_tokens summands in another order (ranks, accumulation) gives r <= n * eps32, and the
    stored weight is rounded once per step: |got - want| <= sum_t(lr_t) * n * eps32 + steps * eps32 * |want|
    (6.9e-8 + 7.1e-7 * |want| here).

    Key biases. Adding b to every key adds q.b to a whole row of attention logits, which softmax ignores: the
    key bias's gradient is zero in exact arithmetic, and in fp32 it is the rounding left of terms that cancel,
    eps32 times the scale of the query bias's gradient (measured 7e-12..1e-11 against 4e-5..9e-5). That is far
    below AdamW's eps (1e-8), where Adam is SGD at rate lr/eps: each run moves its key biases by
    lr_t * noise_t / eps, and the two runs' noises differ. So |got - want| <= 2 * sum_t lr_t * eps32 *
    max|query-bias grad_t| / eps (3.8e-6 here, 0.2% of a learned bias ~ sum_t lr_t = 2.25e-3). The worst
    element measured 0.44 of its bound (a qkv weight); a learned element off by 1% of one step's lr fails."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    got = get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints"))
    want = record["params"]
    assert set(got) <= set(want) and "wte.weight" in got, sorted(got)
    lr_sum = sum(record["lr"].values())
    key_bias_bound = 2 * sum(lr * FP32_EPS * record["query_bias_grad"][s] / adam_eps for s, lr in record["lr"].items())
    beyond = {}
    for name, tensor in got.items():
        bound = lr_sum * summands * FP32_EPS + len(record["lr"]) * FP32_EPS * want[name].abs()
        if name.endswith("attn.qkv.bias"):
            kv_width = (tensor.numel() - d_model) // 2
            bound[d_model : d_model + kv_width] = key_bias_bound
        worst = ((tensor - want[name]).abs() / bound).max().item()
        if worst > 1:
            beyond[name] = f"{worst:.2f} x its bound"
    assert not beyond, beyond


def assert_partitioned(run: Path, world: int) -> None:
    """ZeRO-3: each rank's checkpoint holds ~1/world of the fp32 master weights, together all of them."""
    from pretrain.checkpoint import find_resumable

    found = find_resumable(run)
    sizes = [
        sum(t.numel() for t in torch.load(f, weights_only=False)["optimizer_state_dict"]["fp32_flat_groups"])
        for f in sorted(found.path.glob("zero_pp_rank_*_optim_states.pt"))
    ]
    cfg = load_config("debug", None, [*TINY_TRAIN_SETTINGS, "model.vocab_size=256"])
    total = sum(p.numel() for p in GPT(cfg.model).parameters())
    assert len(sizes) == world and sum(sizes) >= total
    assert all(size <= total / world + 4096 for size in sizes), (sizes, total)


def assert_end_of_run_report(stdout: str) -> None:
    """The last lines of rank 0 are `loss: X` and `perplexity: exp(X)` for the validation set."""
    lines = dict(line.split(": ", 1) for line in stdout.splitlines() if line.startswith(("loss: ", "perplexity: ")))
    assert math.isclose(float(lines["perplexity"]), math.exp(float(lines["loss"])), rel_tol=1e-3)
    assert 2.0 < float(lines["loss"]) < math.log(256) + 1


LOG_LINE = re.compile(
    r"^step (\d+)/(\d+) \| loss (\S+) \| lr (\S+) \| grad norm (\S+) \| ([\d,]+) tokens/s \| (\S+) TFLOP/s per GPU "
    r"\| MFU (\S+) \| mem (\S+) GiB$",
    re.MULTILINE,
)


def assert_console(proc, run: Path, steps: int) -> None:
    """One plain line per step (log.interval=1) agreeing with metrics.csv, no progress-bar carriage returns, no
    library warnings, a summary naming the last checkpoint."""
    from pretrain.metrics import read_metrics

    lines = LOG_LINE.findall(proc.stdout)
    assert [int(m[0]) for m in lines] == list(range(1, steps + 1)), proc.stdout[-3000:]
    rows = {int(r["step"]): r for r in read_metrics(run) if "tokens_per_s" in r}
    for step, _, loss, lr, grad_norm, tokens_per_s, *_ in lines:
        row = rows[int(step)]
        assert float(loss) == pytest.approx(float(row["loss"]), abs=1e-4)
        assert float(grad_norm) == pytest.approx(float(row["grad_norm"]), abs=1e-3)
        assert float(lr) == pytest.approx(float(row["lr"]), rel=1e-3, abs=1e-12)
        assert int(tokens_per_s.replace(",", "")) == round(float(row["tokens_per_s"]))
    output = proc.stdout + proc.stderr
    assert "\r" not in output and "FutureWarning" not in output and "before it has started" not in output
    assert f"summary: last checkpoint {run / 'checkpoints' / f'step{steps:08d}'}" in proc.stdout


def test_zero3_bf16_tracks_fp32_reference(tiny_dataset: Path, tmp_path: Path) -> None:
    cpu = json.loads((Path(__file__).resolve().parents[2] / "ds_configs" / "zero3_cpu.json").read_text())
    cpu["bf16"] = {"enabled": True}
    (tmp_path / "bf16.json").write_text(json.dumps(cpu))
    sets = ("train.micro_batch_size=2", "train.global_batch_tokens=256", f"train.max_steps={STEPS}")
    proc = run_train(2, tiny_dataset, tmp_path / "run", (*sets, f"train.ds_config={tmp_path / 'bf16.json'}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = reference_losses(tiny_dataset, sets, STEPS)
    assert_close(step_losses(tmp_path / "run"), want, 2e-2, range(1, STEPS + 1))


def test_non_finite_steps_are_skipped_then_abort_after_max_bad_steps(tiny_dataset: Path, tmp_path: Path) -> None:
    """NaN loss on rank 0 at step 3: no update anywhere. Steps 5, 6 bad with max_bad_steps=2: save and exit 3."""
    sets = (
        "train.micro_batch_size=2",
        "train.global_batch_tokens=256",
        "train.max_steps=10",
        "train.max_bad_steps=2",
    )
    run = tmp_path / "run"
    proc = run_train(2, tiny_dataset, run, sets, env={"PRETRAIN_FAULT_NAN_STEPS": "3,5,6"})
    # torch's launcher exits 1 when a worker fails and names the worker's own exit code (3 = max_bad_steps)
    assert proc.returncode != 0 and "exitcode  : 3" in proc.stderr, proc.stderr[-3000:]
    assert "train.max_bad_steps non-finite steps in a row" in proc.stderr
    assert "update skipped" in proc.stdout
    got = step_losses(run)
    assert all(math.isnan(got[s]) for s in (3, 5, 6)) and max(got) == 6
    want = reference_losses(tiny_dataset, (*sets[:2], "train.max_steps=10"), 4, skip={3})
    assert_close(got, want, 2e-5, (1, 2, 4))
    assert (run / "checkpoints" / "step00000006" / "COMPLETE").is_file()
    assert (run / "checkpoints" / "latest").read_text() == "step00000006"


def test_deepspeed_launcher_on_cpu_matches_reference(tiny_dataset: Path, deepspeed_launcher_launch) -> None:
    """`deepspeed --num_gpus 2 --module pretrain.train` (DS_ACCELERATOR=cpu): 2 ranks, same numbers as torchrun.
    The launch also logs to an offline W&B run, which tests/integration/test_wandb_run.py reads."""
    proc, run = deepspeed_launcher_launch
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "ds_config.json").read_text())["gradient_accumulation_steps"] == 2
    want = reference_losses(tiny_dataset, DEEPSPEED_LAUNCHER_SETS, 3)
    assert_close(step_losses(run), want, 2e-5, (1, 2, 3))


def test_deepspeed_launcher_leaves_no_shared_memory_segment(deepspeed_launcher_launch) -> None:
    """The launcher tells the ranks they share a machine (LOCAL_SIZE), so DeepSpeed's CPU op gave each a ~27 MB
    segment in /dev/shm; before pretrain/cpu_shm.py every launch left them there, in RAM."""
    proc, _ = deepspeed_launcher_launch
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = proc.args[proc.args.index("--master_port") + 1]
    made = [SHM_DIR / segment_name(rank, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for rank in (0, 1)]
    assert [path.name for path in made if path.exists()] == []
