"""Position tables of a bf16 ZeRO-3 model against the same tables built plainly in fp32, for every pos_emb.

`deepspeed.zero.Init` patches tensor constructors (`torch.arange`, `torch.zeros`, ...) so that any floating result
takes the model dtype, and the engine may cast buffers (`data_types.buffer_dtype`). This script builds each
pos_emb variant through the trainer's own `build_engine` (zero.Init + deepspeed.initialize) with bf16 on, at
seq_len 2048 where a table computed in bf16 is visibly wrong, and prints one JSON line per (pos_emb, buffer cast)
with every floating buffer's dtype and its largest difference from the plain fp32 build.

Run in a fresh process (zero.Init needs a process group of its own): `DS_ACCELERATOR=cpu python
tests/support/zero3_positions.py` on CPU, or as is on a CUDA machine. tests/unit/test_model.py asserts on its output.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SEQ_LEN = 2048
VARIANTS = {"learned": "debug", "sinusoidal": "debug", "rope": "llama-debug"}
BUFFER_CASTS = (None, "bf16")  # DeepSpeed's default (buffers untouched) and a JSON that casts buffers to bf16


def run_config(pos_emb: str, buffer_dtype: str | None, folder: Path):
    """The variant's preset at seq_len 2048 in bf16, with the shipped JSON for this accelerator."""
    from deepspeed.accelerator import get_accelerator

    from pretrain.config import load_config
    from pretrain.engine import load_ds_json

    on_cuda = get_accelerator().device_name() == "cuda"
    template = load_ds_json("zero3_bf16.json" if on_cuda else "zero3_cpu.json")
    if buffer_dtype is not None:
        template["data_types"] = {**template.get("data_types", {}), "buffer_dtype": buffer_dtype}
    (folder / "ds.json").write_text(json.dumps(template))
    sets = [f"model.pos_emb={pos_emb}", f"model.seq_len={SEQ_LEN}", "model.vocab_size=256", "train.precision=bf16"]
    sets += ["train.global_batch_tokens=4096", "train.micro_batch_size=2", f"train.ds_config={folder / 'ds.json'}"]
    return load_config(VARIANTS[pos_emb], None, sets)


def floating_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf for name, buf in module.named_buffers() if buf.is_floating_point()}


def compare(pos_emb: str, buffer_dtype: str | None) -> dict:
    """Build the engine the trainer builds; each floating buffer's dtype and max |difference| from plain fp32."""
    from pretrain.engine import build_engine, ds_config_for_run
    from pretrain.model import GPT

    with tempfile.TemporaryDirectory() as tmp:
        cfg = run_config(pos_emb, buffer_dtype, Path(tmp))
        ds_config = ds_config_for_run(cfg, 1, tmp)
        engine = build_engine(cfg, ds_config)
    reference = floating_buffers(GPT(cfg.model))  # outside zero.Init: what export/evaluate/generate build
    trained = floating_buffers(engine.module)
    buffers = {
        name: {
            "dtype": str(buf.dtype),
            "max_abs_diff": (buf.float().cpu() - reference[name]).abs().max().item(),
        }
        for name, buf in trained.items()
    }
    return {"pos_emb": pos_emb, "buffer_dtype": buffer_dtype, "reference": sorted(reference), "buffers": buffers}


def main() -> None:
    import deepspeed

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.init_distributed(dist_backend="gloo" if os.environ.get("DS_ACCELERATOR") == "cpu" else "nccl")
    for pos_emb in VARIANTS:
        for buffer_dtype in BUFFER_CASTS:
            print("RESULT" + json.dumps(compare(pos_emb, buffer_dtype)), flush=True)


if __name__ == "__main__":
    main()
