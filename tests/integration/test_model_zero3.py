"""The model under deepspeed.zero.Init on 2 ranks: initialisation and the fp32 position tables survive ZeRO-3
partitioning (single-device model tests are tests/unit/test_model.py).
"""

from __future__ import annotations

import math

import pytest

ZERO_INIT_SCRIPT = """
import json, math, sys, deepspeed
deepspeed.init_distributed(dist_backend="gloo")
from pretrain.config import ModelConfig, load_config
from pretrain.model import GPT
cfg = ModelConfig(vocab_size=1000, seq_len=64, n_layer=8, n_head=4, d_model=256, pos_emb="rope", norm="rmsnorm",
                  mlp="swiglu", bias=True)
with deepspeed.zero.Init(config_dict_or_path={"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}):
    model = GPT(cfg)
with deepspeed.zero.GatheredParameters(list(model.parameters())):
    out = {"tied": model.lm_head.weight is model.wte.weight,
           "down_std": model.blocks[3].mlp.down.weight.std().item(),
           "qkv_std": model.blocks[0].attn.qkv.weight.std().item(),
           "wte_std": model.wte.weight.std().item(),
           "bias_max": model.blocks[0].attn.qkv.bias.abs().max().item(),
           "norm_mean": model.blocks[0].norm1.weight.mean().item()}
print("RESULT" + json.dumps(out))
"""


BF16_HALF_ULP_AT_ONE = 2.0**-9  # the largest error of rounding a value in [-1, 1] to bf16 (8 significant bits)


@pytest.mark.slow
def test_initialisation_survives_zero3_partitioning() -> None:
    """Under deepspeed.zero.Init each submodule is partitioned as its __init__ returns; the init must already
    have happened there (a whole-model apply() afterwards would only see empty shards)."""
    import json
    import os
    import subprocess
    import sys

    from support.launch import free_port

    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", ZERO_INIT_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    assert result["tied"] and result["bias_max"] == 0.0 and result["norm_mean"] == 1.0
    assert abs(result["down_std"] - 0.02 / math.sqrt(16)) < 0.0005
    assert abs(result["qkv_std"] - 0.02) < 0.001 and abs(result["wte_std"] - 0.02) < 0.001


@pytest.mark.slow
def test_position_tables_under_bf16_zero3_equal_the_fp32_tables() -> None:
    """zero.Init turns floating constructor results into bf16; positions computed in bf16 at seq 2048 are off by up
    to 2.0 (adjacent positions collapse to one rotation). Every pos_emb, built by the trainer's own engine with bf16
    on, must keep its tables equal to the plain fp32 build to bf16 rounding of the final table, even when the JSON
    casts buffers (data_types.buffer_dtype); with DeepSpeed's default they stay fp32 and exact."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from support.launch import free_port

    script = Path(__file__).resolve().parents[1] / "support" / "zero3_positions.py"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line[6:]) for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert {(r["pos_emb"], r["buffer_dtype"]) for r in results} == {
        (p, d) for p in ("learned", "sinusoidal", "rope") for d in (None, "bf16")
    }
    expected = {
        "learned": [],
        "sinusoidal": ["pos_table"],
        "rope": ["blocks.0.attn.rotary.cos", "blocks.0.attn.rotary.sin"],
    }
    for result in results:
        where = f"pos_emb={result['pos_emb']} buffer_dtype={result['buffer_dtype']}"
        assert sorted(result["buffers"]) == result["reference"] == expected[result["pos_emb"]], where
        for name, buf in result["buffers"].items():
            assert buf["max_abs_diff"] <= BF16_HALF_ULP_AT_ONE, f"{where}: {name} {buf}"
            if result["buffer_dtype"] is None:
                assert buf == {"dtype": "torch.float32", "max_abs_diff": 0.0}, f"{where}: {name}"
