"""`pretrain export RUN_OR_CKPT OUT --format hf`: a partitioned ZeRO-3 checkpoint as a Hugging Face folder.

The checkpoint is loaded by pretrain/interop/consolidated.py (fp32 master weights from every ZeRO partition,
checked against our GPT's keys and shapes), mapped to GPT2LMHeadModel or LlamaForCausalLM by
pretrain/interop/hf.py, and written with the run's tokenizer for AutoTokenizer (a SentencePiece model converted, an adopted tokenizer.json as it is)
(pretrain/interop/hf_tokenizer.py).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

FORMATS = ("hf",)


def export_hf(run_or_ckpt: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write safetensors + config.json + generation_config.json + tokenizer files to out_dir."""
    # imported here, not at the top: `pretrain --help` imports every subcommand's module (infra/cli.py), and these
    # load torch and transformers (seconds each)
    from pretrain.interop.consolidated import check_fits, load_consolidated, run_tokenizer
    from pretrain.interop.hf import save_hf
    from pretrain.interop.hf_tokenizer import save_hf_tokenizer

    consolidated = load_consolidated(run_or_ckpt)
    check_fits(consolidated)  # keys and shapes, before anything is written
    out = Path(out_dir)
    cfg = consolidated.cfg
    tokenizer = run_tokenizer(cfg)
    save_hf(consolidated.state_dict, cfg.model, out, **tokenizer.special_ids)
    save_hf_tokenizer(tokenizer.model_path, out, cfg.model.seq_len, tokenizer.special_ids)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, its checkpoints/ folder, or one checkpoints/<tag> folder")
    parser.add_argument("out", help="output folder for the Hugging Face model")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="hf: transformers from_pretrained folder")


def run(args: argparse.Namespace) -> int:
    out = export_hf(args.checkpoint, args.out)
    print(f"exported: {out}")
    return 0
