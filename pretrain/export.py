"""`pretrain export RUN_OR_CKPT OUT --format hf`: a partitioned ZeRO-3 checkpoint as a Hugging Face folder.

The weights are consolidated with DeepSpeed's own `get_fp32_state_dict_from_zero_checkpoint` (the fp32 master
copy from every rank's optimizer partition, not the bf16 working copy), loaded into our GPT to prove the keys
and shapes match, mapped to GPT2LMHeadModel or LlamaForCausalLM by pretrain/hf.py, and written with the run's
SentencePiece tokenizer converted for AutoTokenizer. `generate` and `evaluate` reuse `load_consolidated`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMATS = ("hf",)


class ExportError(RuntimeError):
    """The checkpoint or run folder cannot be exported; the message names the file and the fix."""


@dataclass
class Consolidated:
    """A checkpoint's full fp32 weights with the config and folders they came from."""

    cfg: Any  # RunConfig
    state_dict: dict[str, torch.Tensor]
    ckpt_dir: Path
    run_dir: Path


def check_complete(ckpt_root: Path, tag: str) -> None:
    """Refuse a checkpoint whose save was interrupted or whose per-rank files are missing."""
    from pretrain.checkpoint import COMPLETE

    folder = ckpt_root / tag
    if not (folder / COMPLETE).is_file():
        raise ExportError(f"{folder}: no {COMPLETE} marker (the save was interrupted); export an earlier tag")
    optim_files = sorted(folder.glob("*optim_states.pt"))
    model_files = sorted(folder.glob("*model_states.pt"))
    if not optim_files or not model_files:
        raise ExportError(f"{folder}: no ZeRO model/optimizer state files; is this a DeepSpeed checkpoint folder?")
    if len(optim_files) != len(model_files):
        raise ExportError(
            f"{folder}: {len(optim_files)} optimizer partitions but {len(model_files)} model-state files; "
            "a rank's files are missing, copy the whole tag folder"
        )


def consolidate(ckpt_root: Path, tag: str) -> dict[str, torch.Tensor]:
    """fp32 state dict from all ZeRO partitions, via DeepSpeed's zero_to_fp32 (tied weights share a tensor)."""
    check_complete(ckpt_root, tag)
    # one process, no launcher: name the accelerator so DeepSpeed does not guess (and warn) on import
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    try:  # DeepSpeed logs and reports progress on stdout; keep stdout for results (`loss: ...`, generated text)
        with contextlib.redirect_stdout(sys.stderr):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_root), tag=tag)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise ExportError(f"{ckpt_root / tag}: DeepSpeed could not consolidate it ({err})") from err
    return {k: v.float() for k, v in state.items()}


def load_consolidated(run_or_ckpt: str | os.PathLike) -> Consolidated:
    """Resolve a run folder / checkpoints folder / tag folder and consolidate its newest complete checkpoint."""
    from pretrain.checkpoint import resolve_checkpoint

    ckpt_root, tag = resolve_checkpoint(run_or_ckpt)  # verifies the sha256 manifest once (can be minutes)
    cfg = run_config(ckpt_root.parent)
    return Consolidated(cfg, consolidate(ckpt_root, tag), ckpt_root / tag, ckpt_root.parent)


def run_config(run_dir: Path) -> Any:
    """The RunConfig the run was trained with, from RUN/config.yaml."""
    import yaml

    from pretrain.config import RunConfig

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ExportError(f"{path}: missing; export needs the run folder as pretrain.train wrote it")
    return RunConfig.from_dict(yaml.safe_load(path.read_text()))


def build_model(consolidated: Consolidated, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Our GPT with the consolidated weights; a key or shape mismatch is an error, never a silent re-init."""
    from pretrain.model import GPT

    model = GPT(consolidated.cfg.model)
    missing, unexpected = model.load_state_dict(consolidated.state_dict, strict=False)
    tied = {"lm_head.weight"} if consolidated.cfg.model.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ExportError(
            f"{consolidated.ckpt_dir}: weights do not fit model config (missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}); was config.yaml edited after training?"
        )
    return model.to(device).eval()


def tokenizer_model_path(cfg: Any) -> Path:
    """The run's SentencePiece model: data.path/tokenizer/spm.model (as the dataset manifest records it)."""
    from data_pipeline.shards import read_manifest

    if not cfg.data.path:
        raise ExportError("data.path is empty in the run's config.yaml; cannot find the tokenizer")
    manifest = read_manifest(cfg.data.path)
    relative = manifest.get("tokenizer", {}).get("path", "tokenizer/spm.model")
    path = Path(cfg.data.path) / relative
    if not path.is_file():
        raise ExportError(f"{path}: tokenizer model missing (from data.path={cfg.data.path}); restore the dataset")
    return path


def eos_id_of(cfg: Any) -> int:
    from data_pipeline.shards import read_manifest

    return int(read_manifest(cfg.data.path)["eos_id"])


def export_hf(run_or_ckpt: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write safetensors + config.json + generation_config.json + tokenizer files to out_dir."""
    from pretrain.hf import save_hf
    from pretrain.hf_tokenizer import save_hf_tokenizer

    consolidated = load_consolidated(run_or_ckpt)
    model = build_model(consolidated)  # validates keys and shapes before anything is written
    out = Path(out_dir)
    cfg = consolidated.cfg
    tokenizer = tokenizer_model_path(cfg)
    save_hf(model.state_dict(), cfg.model, out, **_special_ids(cfg))
    save_hf_tokenizer(tokenizer, out, model_max_length=cfg.model.seq_len)
    return out


def _special_ids(cfg: Any) -> dict[str, int | None]:
    """bos/eos/pad ids for generation_config.json, from the dataset manifest's tokenizer record."""
    from data_pipeline.shards import read_manifest

    info = read_manifest(cfg.data.path).get("tokenizer", {})
    ids = {k: info.get(f"{k}_id") for k in ("bos", "eos", "pad")}
    return {f"{k}_token_id": (v if v is not None and v >= 0 else None) for k, v in ids.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, its checkpoints/ folder, or one checkpoints/<tag> folder")
    parser.add_argument("out", help="output folder for the Hugging Face model")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="hf: transformers from_pretrained folder")


def run(args: argparse.Namespace) -> int:
    try:
        out = export_hf(args.checkpoint, args.out)
    except (ExportError, FileNotFoundError) as err:  # a corrupt checkpoint is a FileNotFoundError too
        print(f"pretrain export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported: {out}")
    return 0
