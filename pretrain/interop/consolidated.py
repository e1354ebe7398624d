"""Load a run's consolidated weights for inference: the one path `export`, `generate` and `evaluate` share.

A run folder, its checkpoints/ folder or one tag folder resolves to the newest complete, verified checkpoint;
its ZeRO-3 partitions are consolidated with DeepSpeed's own `get_fp32_state_dict_from_zero_checkpoint` (the fp32
master copy from every rank's optimizer partition, not the bf16 working copy); the weights are checked against
GPT(RUN/config.yaml)'s keys and shapes before anything uses them; and the run's tokenizer is found through its
dataset's manifest. `pick_device` is the one device choice of the single-process commands.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sentencepiece as spm
import torch
import yaml
from tokenizers import Tokenizer

from data_pipeline.shards import read_manifest
from pretrain.checkpoint import CheckpointRef, resolve_checkpoint
from pretrain.config import RunConfig
from pretrain.errors import PretrainError
from pretrain.model import GPT


@dataclass
class Consolidated:
    """A checkpoint's full fp32 weights with the config and folders they came from."""

    cfg: RunConfig
    state_dict: dict[str, torch.Tensor]
    ckpt_dir: Path
    run_dir: Path


def check_partitions(ref: CheckpointRef) -> None:
    """Refuse a tag folder whose per-rank files are missing (a checkpoint without a checksum file; one with a
    manifest, or without a COMPLETE marker, was already refused by checkpoint.resolve_checkpoint)."""
    folder = ref.path
    optim_files = sorted(folder.glob("*optim_states.pt"))
    model_files = sorted(folder.glob("*model_states.pt"))
    if not optim_files or not model_files:
        raise PretrainError(f"{folder}: no ZeRO model/optimizer state files; is this a DeepSpeed checkpoint folder?")
    if len(optim_files) != len(model_files):
        raise PretrainError(
            f"{folder}: {len(optim_files)} optimizer partitions but {len(model_files)} model-state files; "
            "a rank's files are missing, copy the whole tag folder"
        )


def consolidate(ref: CheckpointRef) -> dict[str, torch.Tensor]:
    """fp32 state dict from all ZeRO partitions, via DeepSpeed's zero_to_fp32 (tied weights share a tensor)."""
    check_partitions(ref)
    # one process, no launcher: name the accelerator so DeepSpeed does not guess (and warn) on import
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    try:  # DeepSpeed logs and reports progress on stdout; keep stdout for results (`loss: ...`, generated text)
        with contextlib.redirect_stdout(sys.stderr):  # imported here: after DS_ACCELERATOR, with stdout redirected
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(ref.folder), tag=ref.tag)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise PretrainError(f"{ref.path}: DeepSpeed could not consolidate it ({err})") from err
    return {k: v.float() for k, v in state.items()}


def load_consolidated(run_or_ckpt: str | os.PathLike) -> Consolidated:
    """Resolve a run folder / checkpoints folder / tag folder and consolidate its newest complete checkpoint."""
    ref = resolve_checkpoint(run_or_ckpt)  # verifies the checksum file once (can be minutes)
    cfg = run_config(ref.folder.parent)
    return Consolidated(cfg, consolidate(ref), ref.path, ref.folder.parent)


def run_config(run_dir: Path) -> RunConfig:
    """The RunConfig the run was trained with, from RUN/config.yaml."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise PretrainError(f"{path}: missing; pass the run folder as pretrain.train wrote it (or a checkpoint in it)")
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PretrainError(f"{path}: not valid YAML ({err}); restore the file pretrain.train wrote") from err
    if not isinstance(saved, dict):
        raise PretrainError(
            f"{path}: holds {type(saved).__name__}, not a run config; restore the file pretrain.train wrote"
        )
    return RunConfig.from_dict(saved)


def check_fits(consolidated: Consolidated) -> None:
    """The weights have GPT(cfg)'s keys and shapes (checked on the meta device: no memory, no init)."""
    cfg, state = consolidated.cfg.model, consolidated.state_dict
    with torch.device("meta"):
        expected = {k: v.shape for k, v in GPT(cfg).state_dict().items()}
    tied = {"lm_head.weight"} if cfg.tie_embeddings else set()
    missing = sorted(set(expected) - set(state) - tied)
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or reshaped:
        raise PretrainError(
            f"{consolidated.ckpt_dir}: weights do not fit model config (missing {missing}, unexpected "
            f"{unexpected}, other shape {reshaped}); was config.yaml edited after training?"
        )


def inference_model(consolidated: Consolidated, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Our GPT with the consolidated weights; a key or shape mismatch is an error, never a silent re-init."""
    check_fits(consolidated)
    model = GPT(consolidated.cfg.model)
    model.load_state_dict(consolidated.state_dict, strict=False)
    return model.to(device).eval()


@dataclass
class RunTokenizer:
    """The run's tokenizer as its dataset manifest records it."""

    model_path: Path  # data.path/tokenizer/spm.model, or hf_tokenizer.json for a dataset made with tokenizer.from
    eos_id: int
    special_ids: dict[str, int | None]  # bos/eos/pad_token_id for generation_config.json (None: absent)

    def encoder(self) -> TextCodec:
        """encode(text) -> ids and decode(ids) -> text, without special tokens (the shards add EOS themselves)."""
        if self.model_path.suffix == ".json":
            return _HFCodec(self.model_path)
        return spm.SentencePieceProcessor(model_file=str(self.model_path))


class TextCodec(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class _HFCodec:
    """An adopted Hugging Face tokenizer.json with SentencePieceProcessor's encode/decode of one text."""

    def __init__(self, path: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def run_tokenizer(cfg: RunConfig) -> RunTokenizer:
    """The tokenizer of the run's dataset (data.path, or a mixture's first source: all share it), from one read of
    its manifest."""
    dataset = cfg.data.tokenizer_dataset
    if not dataset:
        raise PretrainError("data.path is empty in the run's config.yaml; cannot find the tokenizer")
    manifest = read_manifest(dataset)
    info = manifest.get("tokenizer", {})
    path = Path(dataset) / info.get("path", "tokenizer/spm.model")
    if not path.is_file():
        raise PretrainError(f"{path}: tokenizer model missing (from the run's dataset {dataset}); restore the dataset")
    ids = {k: info.get(f"{k}_id") for k in ("bos", "eos", "pad")}
    special = {f"{k}_token_id": (v if v is not None and v >= 0 else None) for k, v in ids.items()}
    return RunTokenizer(path, int(manifest["eos_id"]), special)


def pick_device(requested: str) -> tuple[torch.device, torch.dtype]:
    """cuda in bf16 when available (or asked for), else cpu in fp32 (bf16 matmuls are slow on most CPUs)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32
