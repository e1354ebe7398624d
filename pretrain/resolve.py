"""The run config of a training launch: preset, YAML file and --set overrides (pretrain/config.py), then what only
the launch knows: the dataset's path and vocabulary, the model of an --init-from-hf folder, the accelerator.

Every rank resolves the same config from the same argv and files, before the process group exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrain import mixture
from pretrain.config import ModelConfig, RunConfig, load_config
from pretrain.interop import hf_init
from pretrain.metrics import log0
from pretrain.mixture import data_overrides

GPU_DS_CONFIGS = ("zero3_bf16.json", "zero3_offload.json")
CPU_DS_CONFIG = "ds_configs/zero3_cpu.json"


def build_run_config(args: argparse.Namespace, manifest: dict, accelerator: str) -> RunConfig:
    """Preset + YAML + overrides, with the data path (or mixture), the vocabulary and the EOS id (the document
    boundaries model.doc_mask keeps apart) taken from the dataset."""
    overrides = [*data_overrides(args.data), f"model.vocab_size={int(manifest['vocab_size'])}"]
    if "eos_id" in manifest:
        overrides.append(f"model.eos_id={int(manifest['eos_id'])}")
    overrides += args.overrides
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
    compared = hf_init.check_tokenizer(args.init_from_hf, model.vocab_size, manifest, configured_data(args))
    log0(f"--init-from-hf {args.init_from_hf}: model.* from its config.json; tokenizer: {compared}")
    return model


def configured_data(args: argparse.Namespace) -> str:
    """The dataset whose manifest sets the vocabulary: --data, or a mixture's first source (all share it)."""
    return args.data[0].rpartition("=")[0] if "=" in args.data[0] else args.data[0]


def checked_data_identity(cfg: RunConfig) -> list[dict]:
    """Every source's manifest (one tokenizer for all) and its identity, as checkpoints record it."""
    sources = mixture.sources(cfg.data)
    return mixture.identity(sources, mixture.read_manifests(sources), cfg.model.seq_len)


def hf_start_record(folder: str | None) -> dict | None:
    """--init-from-hf's record (folder, config sha256, weight sizes): cheap, so every rank makes its own."""
    return hf_init.start_record(folder) if folder else None
