"""The run config of a training launch: preset, YAML file and --set overrides (pretrain/config.py), then what only
the launch knows: the dataset's path and vocabulary, the model of an --init-from-hf folder, the accelerator.

Every rank resolves the same config from the same argv and files, before the process group exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrain.config import ModelConfig, RunConfig, load_config
from pretrain.interop import hf_init
from pretrain.metrics import log0

GPU_DS_CONFIGS = ("zero3_bf16.json", "zero3_offload.json")
CPU_DS_CONFIG = "ds_configs/zero3_cpu.json"


def build_run_config(args: argparse.Namespace, manifest: dict, accelerator: str) -> RunConfig:
    """Preset + YAML + overrides, with the data path and the vocabulary taken from the dataset."""
    overrides = [f"data.path={args.data}", f"model.vocab_size={int(manifest['vocab_size'])}", *args.overrides]
    cfg = load_config(args.preset, args.config, overrides)
    if args.init_from_hf:
        cfg.model = model_from_hf_folder(args, cfg.model, manifest)
    if accelerator == "cpu" and Path(cfg.train.ds_config).name in GPU_DS_CONFIGS:
        log0(f"note: CPU accelerator; using {CPU_DS_CONFIG} instead of {cfg.train.ds_config} (FusedAdam needs CUDA)")
        cfg.train.ds_config = CPU_DS_CONFIG
    return cfg


def model_from_hf_folder(args: argparse.Namespace, configured: ModelConfig, manifest: dict) -> ModelConfig:
    """--init-from-hf: the folder's model config, checked against this launch's model.* and the dataset's tokenizer."""
    explicit = hf_init.explicit_model_keys(args.config, args.overrides)
    model = hf_init.model_from_folder(args.init_from_hf, configured, explicit)
    compared = hf_init.check_tokenizer(args.init_from_hf, model.vocab_size, manifest, args.data)
    log0(f"--init-from-hf {args.init_from_hf}: model.* from its config.json; tokenizer: {compared}")
    return model


def hf_start_record(folder: str | None) -> dict | None:
    """--init-from-hf's record (folder, config sha256, weight sizes): cheap, so every rank makes its own."""
    return hf_init.start_record(folder) if folder else None
