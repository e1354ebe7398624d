"""`pretrain.train --init-from-hf DIR`: continued pretraining from a local Hugging Face GPT-2 or Llama folder.

The folder (config.json + model.safetensors, or safetensors shards with model.safetensors.index.json: what
`pretrain export` and transformers' save_pretrained write) decides the model. Every model.* key comes from its
config.json (pretrain/interop/hf.py); the preset and --config/--set supply the rest of the run (optim, train,
data, log), and a model.* value they set explicitly that differs from the folder's is refused, naming each key.
Two model keys do not change what the weights compute and stay the launch's: model.dropout (when set) and
model.pad_vocab_multiple (the padded rows start at zero).

The folder's tokenizer must be the dataset's: equal vocabulary sizes always; the file the dataset was tokenized
with must be the folder's, by the sha256 the manifest records: a SentencePiece .model (what `pretrain export`
copies as sentencepiece.model, or Llama's tokenizer.model) or, for a dataset made with `pipeline run --set
tokenizer.from=FOLDER` from a Hugging Face tokenizer.json, the folder's tokenizer.json. A folder with only a
tokenizer.json and a dataset with a trained SentencePiece model must agree on every piece's id.

Loading into ZeRO-3 (the way transformers' DeepSpeed integration loads a checkpoint): the model is built
partitioned under deepspeed.zero.Init as always; before the optimizer exists each parameter is gathered in turn
(GatheredParameters, modifier_rank=0), rank 0 copies the folder's value into it and DeepSpeed re-partitions it
from rank 0. The optimizer then takes its fp32 master copy from those parameters, which a bf16 run has rounded to
bf16, so afterwards each master partition is set from the folder's full-precision value (broadcast from rank 0,
DeepSpeed's safe_set_full_fp32_param). Only rank 0 reads the weights (once, in CPU memory); no rank holds more
than one gathered parameter at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import deepspeed
import sentencepiece as spm
import torch
import torch.distributed as dist
from deepspeed import DeepSpeedEngine
from deepspeed.utils import safe_set_full_fp32_param
from tokenizers import Tokenizer

from pretrain.config import SCHEMA, ModelConfig, RunConfig
from pretrain.engine import build_engine
from pretrain.errors import ConfigError
from pretrain.interop.hf import config_from_hf, load_hf_folder, read_hf_config, weight_files

LAUNCH_KEYS = ("dropout", "pad_vocab_multiple")  # the model keys a launch may set: training-only, not the function


# --------------------------------------------------------------------------- the run config


def explicit_model_keys(config_path: str | os.PathLike | None, overrides: Iterable[str]) -> set[str]:
    """The model.* keys this launch sets itself (its --config YAML and --set), not the preset's."""
    keys = {SCHEMA.parse_override(o)[0] for o in overrides}
    model_keys = {k.removeprefix("model.") for k in keys if k.startswith("model.")}
    file_values = SCHEMA.read_yaml(config_path) if config_path else {}
    return model_keys | set(file_values.get("model") or {})


def model_from_folder(folder: str | os.PathLike, configured: ModelConfig, explicit: set[str]) -> ModelConfig:
    """The folder's model config with the launch's LAUNCH_KEYS; an explicit model.* value that differs is refused."""
    from_folder = config_from_hf(read_hf_config(folder))
    conflicts = [
        f"model.{key}={getattr(configured, key)!r} (the folder has {getattr(from_folder, key)!r})"
        for key in sorted(explicit - set(LAUNCH_KEYS))
        if getattr(configured, key) != getattr(from_folder, key)
    ]
    if conflicts:
        raise ConfigError(
            f"--init-from-hf {folder}: {', '.join(conflicts)}: with --init-from-hf the model settings come from "
            f"{Path(folder) / 'config.json'}; drop these from --set/--config (only model.dropout and "
            "model.pad_vocab_multiple may be set)"
        )
    kept = {"pad_vocab_multiple": configured.pad_vocab_multiple}
    if "dropout" in explicit:
        kept["dropout"] = configured.dropout
    return replace(from_folder, **kept)


def check_tokenizer(folder: str | os.PathLike, vocab_size: int, manifest: dict, data_dir: str | os.PathLike) -> str:
    """Refuse a folder whose tokenizer is not the dataset's; return what was compared (for the log)."""
    folder, data_dir = Path(folder), Path(data_dir)
    info = manifest.get("tokenizer", {})
    spm_path = data_dir / info.get("path", "tokenizer/spm.model")
    if vocab_size != int(manifest["vocab_size"]):
        raise ConfigError(
            f"--init-from-hf {folder}: its vocabulary has {vocab_size} tokens (config.json), the dataset {data_dir} "
            f"was tokenized with {spm_path} ({manifest['vocab_size']} tokens): continue on data tokenized with the "
            "folder's tokenizer"
        )
    # the file the dataset was tokenized with: a SentencePiece .model (trained, or `pipeline run` with
    # tokenizer.from=a folder holding one) or a Hugging Face tokenizer.json (tokenizer.from=a Hub folder)
    same_kind = [folder / "tokenizer.json"] if spm_path.suffix == ".json" else sorted(folder.glob("*.model"))
    same_kind = [path for path in same_kind if path.is_file()]
    if same_kind and info.get("sha256"):
        return _check_same_file(same_kind, info["sha256"], spm_path, data_dir)
    if (folder / "tokenizer.json").is_file() and spm_path.is_file() and spm_path.suffix == ".model":
        return _check_pieces(folder / "tokenizer.json", spm_path)
    return "vocabulary size only (the folder has no tokenizer files)"


def _check_same_file(candidates: list[Path], sha256: str, used: Path, data_dir: Path) -> str:
    """One of the folder's tokenizer files has the sha256 the dataset's manifest records."""
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in candidates}
    if sha256 not in digests.values():
        shown = ", ".join(f"{path} (sha256 {digest[:12]}…)" for path, digest in digests.items())
        raise ConfigError(
            f"--init-from-hf: {shown} is not the tokenizer of the dataset {data_dir} ({used}, sha256 "
            f"{sha256[:12]}…): continue on data tokenized with the folder's tokenizer (pipeline run --set "
            f"tokenizer.from={candidates[0].parent})"
        )
    return f"sha256 {sha256[:12]}… equal"


def _check_pieces(tokenizer_json: Path, spm_path: Path) -> str:
    """Every SentencePiece piece of the dataset has the same id in the folder's tokenizer.json."""
    theirs = Tokenizer.from_file(str(tokenizer_json)).get_vocab(with_added_tokens=True)
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    for index in range(sp.get_piece_size()):
        piece = sp.id_to_piece(index)
        if theirs.get(piece) != index:
            raise ConfigError(
                f"--init-from-hf: {tokenizer_json} gives {piece!r} id {theirs.get(piece)}, the dataset's tokenizer "
                f"{spm_path} id {index}: another tokenizer; continue on data tokenized with the folder's tokenizer"
            )
    return f"all {sp.get_piece_size()} pieces equal"


def start_record(folder: str | os.PathLike) -> dict:
    """Where a run starts (for RUN/launches/*.yaml and every checkpoint): the folder, its config's sha256 and the
    sizes of its weight files (cheap on every launch; the weights are read only when the run starts from them)."""
    folder = Path(folder).resolve()
    config = (folder / "config.json").read_bytes()
    return {
        "path": str(folder),
        "config_sha256": hashlib.sha256(config).hexdigest(),
        "weights": {path.name: path.stat().st_size for path in weight_files(folder)},
    }


# --------------------------------------------------------------------------- the engine


def build_engine_from_hf(cfg: RunConfig, ds_config: dict, folder: str | os.PathLike, rank: int) -> DeepSpeedEngine:
    """The trainer's engine (pretrain/engine.py) holding the folder's weights, in the working and master copies."""
    state = folder_weights(folder, cfg.model) if rank == 0 else None
    engine = build_engine(cfg, ds_config, load_weights=lambda model: load_into_partitions(model, state, rank))
    if engine.bfloat16_enabled():
        set_fp32_master(engine, state, rank)
    return engine


def folder_weights(folder: str | os.PathLike, model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict of the folder, padded as the run's config pads (rank 0 only)."""
    from_folder, state = load_hf_folder(folder, pad_vocab_multiple=model_cfg.pad_vocab_multiple)
    if replace(from_folder, dropout=model_cfg.dropout) != model_cfg:
        raise ConfigError(f"--init-from-hf {folder}: config.json changed after the launch read it; launch again")
    return state


@torch.no_grad()
def load_into_partitions(model: torch.nn.Module, state: dict[str, torch.Tensor] | None, rank: int) -> None:
    """Copy rank 0's `state` into every (partitioned) parameter, one gathered parameter at a time."""
    for name, param in model.named_parameters():  # a tied head is one parameter, named once
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            if rank == 0:
                param.data.copy_(state[name])  # in the model's dtype (bf16 rounds to nearest)
        if not hasattr(param, "ds_id") and dist.is_initialized():  # not partitioned (ZeRO < 3): every rank a copy
            dist.broadcast(param.data, 0)


@torch.no_grad()
def set_fp32_master(engine: DeepSpeedEngine, state: dict[str, torch.Tensor] | None, rank: int) -> None:
    """Give the optimizer's fp32 master partitions the folder's full-precision values (broadcast from rank 0)."""
    for name, param in engine.module.named_parameters():
        shape = tuple(getattr(param, "ds_shape", param.shape))
        if rank == 0:
            value = state[name].to(engine.device, torch.float32)
        else:
            value = torch.empty(shape, dtype=torch.float32, device=engine.device)
        dist.broadcast(value, 0)
        safe_set_full_fp32_param(param, value)
