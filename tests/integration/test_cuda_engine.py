"""On CUDA under the real DeepSpeed engine (NCCL, bf16, ZeRO-3, FusedAdam): position tables, one step against
plain PyTorch, and a checkpoint save with exact resume through the trainer itself.

Skipped without CUDA; benchmarks/gpu_run.sh runs them with `pytest -m cuda`. The engine tests share one
single-process NCCL group (world size 1); the resume test launches `pretrain.train` like a user.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SEQ_LEN = 2048  # where a position table computed in bf16 collapses neighbouring positions
BF16_TABLE_ERROR = 2**-8  # a correct fp32 table of values in [-1, 1] rounded to bf16 is off by at most this
GPU_OPTIMIZER = "FusedAdam"  # what zero3_bf16.json's AdamW becomes on CUDA


@pytest.fixture(scope="module")
def nccl_group():
    """World size 1 on NCCL, as `deepspeed` would start it for one GPU."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        DS_ACCELERATOR="cuda", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from pretrain.engine import init_distributed

    assert init_distributed() == (0, 1)
    assert torch.distributed.get_backend() == "nccl"
    yield
    torch.distributed.destroy_process_group()


def gpu_config(preset: str, folder: Path, *sets: str):
    """The preset, small, on the shipped GPU JSON (FusedAdam, bf16) with one micro batch per step."""
    from pretrain.config import load_config

    base = [
        "model.vocab_size=512",
        f"model.seq_len={SEQ_LEN}",
        "train.micro_batch_size=2",
        f"train.global_batch_tokens={2 * SEQ_LEN}",
        "train.ds_config=ds_configs/zero3_bf16.json",
        "train.precision=bf16",
        "train.max_steps=10",
        "optim.warmup_steps=1",
        "log.tensorboard=false",
        "log.csv=false",
    ]
    return load_config(preset, None, [*base, *sets])


def floating_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf for name, buf in module.named_buffers() if buf.is_floating_point()}


@pytest.mark.parametrize(
    ("pos_emb", "preset"), [("learned", "debug"), ("sinusoidal", "debug"), ("rope", "llama-debug")]
)
def test_position_tables_built_under_zero_init_in_bf16_equal_the_fp32_ones(nccl_group, pos_emb, preset, tmp_path):
    """Every floating buffer of the engine's model (built under zero.Init, bf16) against the plain fp32 build."""
    import deepspeed

    from pretrain.engine import build_engine, ds_config_for_run
    from pretrain.model import GPT

    cfg = gpu_config(preset, tmp_path, f"model.pos_emb={pos_emb}")
    engine = build_engine(cfg, ds_config_for_run(cfg, 1, tmp_path))
    plain = floating_buffers(GPT(cfg.model))  # outside zero.Init, fp32: what export/evaluate/generate build
    built = floating_buffers(engine.module)
    assert sorted(built) == sorted(plain)
    for name, table in built.items():
        diff = (table.float().cpu() - plain[name]).abs().max().item()
        assert diff <= BF16_TABLE_ERROR, f"{pos_emb}: buffer {name} ({table.dtype}) off by {diff:.4f}"
        rows = table.float().reshape(table.size(0), -1)
        identical = (rows[1:] == rows[:-1]).all(dim=1).sum().item()
        assert identical == 0, f"{pos_emb}: {identical} adjacent positions share one row of {name}"
    if pos_emb == "learned":  # a parameter: partitioned; gathered, it must be the random init, every row distinct
        wpe = engine.module.wpe.weight
        with deepspeed.zero.GatheredParameters([wpe]):
            table = wpe.detach().float().clone()
        assert table.shape == (SEQ_LEN, cfg.model.d_model)
        assert abs(table.std().item() - cfg.model.init_std) < 0.1 * cfg.model.init_std
        assert (table[1:] == table[:-1]).all(dim=1).sum().item() == 0
    engine.destroy()


class PlainBf16Step:
    """What DeepSpeed's bf16 ZeRO does, in plain PyTorch: bf16 weights for forward/backward, fp32 master weights,
    gradients clipped by their global fp32 norm, torch AdamW (two groups, decay on matrices) on the masters."""

    def __init__(self, model: torch.nn.Module, cfg) -> None:
        from pretrain.engine import decay_groups

        self.model, self.cfg = model.to(torch.bfloat16), cfg
        self.master = {id(p): p.detach().float().clone().requires_grad_() for p in model.parameters()}
        groups = decay_groups(model, cfg.optim.weight_decay)
        for group in groups:
            group["params"] = [self.master[id(p)] for p in group["params"]]
        self.optim = torch.optim.AdamW(groups, lr=0.0, betas=cfg.optim.betas, eps=cfg.optim.eps)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[float, float]:
        _, loss = self.model(x, y)
        loss.backward()
        params = list(self.model.parameters())
        grads = [p.grad.float() for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        clip = min(1.0, self.cfg.optim.grad_clip / (norm + 1e-6)) if self.cfg.optim.grad_clip else 1.0
        for p, g in zip(params, grads, strict=True):
            self.master[id(p)].grad = g * clip
            p.grad = None
        for group in self.optim.param_groups:
            group["lr"] = lr
        self.optim.step()
        with torch.no_grad():
            for p in params:
                p.copy_(self.master[id(p)])
        return loss.item(), norm


@pytest.mark.parametrize("preset", ["debug", "llama-debug"])
def test_zero3_bf16_fused_adam_steps_match_plain_pytorch(nccl_group, preset: str, tmp_path: Path) -> None:
    """Three engine steps (the first at lr 0, as warmup starts) against PlainBf16Step from the same weights:
    losses and gradient norms agree, so the loss is scaled right and FusedAdam updates like AdamW."""
    import deepspeed

    from pretrain.engine import build_engine, ds_config_for_run
    from pretrain.model import GPT

    cfg = gpu_config(preset, tmp_path, "optim.grad_clip=0.5", "optim.lr=0.02")  # updates large enough to see
    ds = ds_config_for_run(cfg, 1, tmp_path)
    assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["stage"] == 3
    torch.manual_seed(0)
    engine = build_engine(cfg, ds)
    assert type(engine.optimizer.optimizer).__name__ == GPU_OPTIMIZER
    engine.lr_scheduler.step()  # as pretrain/train.py's _start_schedule: step 1 at warmup's lr 0
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        weights = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    plain_model = GPT(cfg.model).cuda()
    plain_model.load_state_dict(weights)
    plain = PlainBf16Step(plain_model, cfg)
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        x, y = (torch.randint(0, 512, (2, SEQ_LEN), generator=g).cuda() for _ in range(2))
        lr = engine.get_lr()[0]
        _, loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        want_loss, want_norm = plain.step(x, y, lr)
        got_norm = float(engine.get_global_grad_norm())
        assert loss.item() == pytest.approx(want_loss, rel=2e-3), f"step {step + 1} loss"
        assert got_norm == pytest.approx(want_norm, rel=2e-2), f"step {step + 1} gradient norm"
    assert lr > 0  # the last comparison was after real updates
    engine.destroy()


@pytest.mark.slow
def test_checkpoint_save_and_exact_resume_on_the_gpu(tiny_dataset: Path, tmp_path: Path) -> None:
    """The trainer on one GPU: 6 steps straight (saving at 3) == resume from step 3's checkpoint in a new folder.
    The first step after resume is bit-identical (same weights, same batch); the rest agree to 1e-3, the room
    that non-deterministic backward kernels (atomics in attention/embedding gradients) leave."""
    from support.launch import run_train, step_losses

    sets = (
        "train.ds_config=ds_configs/zero3_bf16.json",
        "train.precision=bf16",
        "train.max_steps=6",
        "train.save_interval=3",
        "train.micro_batch_size=4",
        "train.global_batch_tokens=256",
    )
    env = {"DS_ACCELERATOR": "cuda"}
    straight = run_train(1, tiny_dataset, tmp_path / "straight", sets, env=env, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    want = step_losses(tmp_path / "straight")
    assert sorted(want) == [1, 2, 3, 4, 5, 6]
    config = json.loads((tmp_path / "straight" / "ds_config.json").read_text())
    assert config["bf16"]["enabled"] is True and "torch_adam" not in config["optimizer"]["params"]

    checkpoint = tmp_path / "straight" / "checkpoints" / "step00000003"
    resumed = run_train(1, tiny_dataset, tmp_path / "resumed", sets, env=env, extra=("--resume", str(checkpoint)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = step_losses(tmp_path / "resumed")
    assert sorted(got) == [4, 5, 6], resumed.stdout[-2000:]
    assert got[4] == want[4], f"first step after resume: {got[4]!r} != {want[4]!r}"
    bitwise = all(got[s] == want[s] for s in (5, 6))
    for s in (5, 6):
        assert got[s] == pytest.approx(want[s], rel=1e-3), (s, got[s], want[s], f"bitwise so far: {bitwise}")
