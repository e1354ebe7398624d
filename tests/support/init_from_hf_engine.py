"""Build the trainer's ZeRO-3 engine from Hugging Face folders, as `pretrain.train --init-from-hf` does, and save
what it holds: its logits on fixed tokens and every parameter's fp32 master copy, in fp32 and in bf16.

Run on 2 ranks: `python -m torch.distributed.run --nproc_per_node 2 tests/support/init_from_hf_engine.py DATA OUT.pt HF...`
with DS_ACCELERATOR=cpu. tests/integration/test_init_from_hf.py compares the results with transformers and the source run.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN = 32


def run_config(folder: Path, data: Path, precision: str, tmp: Path):
    """The run config pretrain.train builds for --init-from-hf (model.* from the folder), at 2 ranks."""
    from data_pipeline.shards import read_manifest
    from pretrain.config import load_config
    from pretrain.interop.hf_init import check_tokenizer, model_from_folder

    template = json.loads((ROOT / "ds_configs" / "zero3_cpu.json").read_text())
    template["bf16"] = {"enabled": precision == "bf16"}
    (tmp / "ds.json").write_text(json.dumps(template))
    sets = [f"train.ds_config={tmp / 'ds.json'}", "train.global_batch_tokens=128", "train.micro_batch_size=2"]
    sets += [f"model.seq_len={SEQ_LEN}", "model.vocab_size=256", "model.pad_vocab_multiple=96"]  # pads 256 to 288
    cfg = load_config("debug", None, sets)
    cfg.model = model_from_folder(folder, cfg.model, {"seq_len", "pad_vocab_multiple"})
    check_tokenizer(folder, cfg.model.vocab_size, read_manifest(data), data)
    return cfg


def engine_contents(folder: Path, data: Path, precision: str, rank: int) -> dict:
    """Logits of the engine's forward on fixed tokens and the full fp32 master of every parameter."""
    from deepspeed.utils import safe_get_full_fp32_param

    from pretrain.engine import ds_config_for_run
    from pretrain.interop.hf_init import build_engine_from_hf

    with tempfile.TemporaryDirectory() as tmp:
        cfg = run_config(folder, data, precision, Path(tmp))
        engine = build_engine_from_hf(cfg, ds_config_for_run(cfg, 2, tmp), folder, rank)
    engine.eval()
    tokens = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = engine(tokens)
    masters = {name: safe_get_full_fp32_param(p).cpu() for name, p in engine.module.named_parameters()}
    dtypes = {p.dtype for p in engine.module.parameters()}
    return {"tokens": tokens, "logits": logits.float().cpu(), "masters": masters, "dtypes": sorted(map(str, dtypes))}


def main() -> None:
    import deepspeed
    import torch.distributed as dist

    data, out, folders = Path(sys.argv[1]), Path(sys.argv[2]), [Path(f) for f in sys.argv[3:]]
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    rank = dist.get_rank()
    results = {}
    for folder in folders:
        for precision in ("fp32", "bf16"):
            results[f"{folder.name}/{precision}"] = engine_contents(folder, data, precision, rank)
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
