"""Run configuration: one dataclass per concern, validated when built.

Every error names the field and says what to do, so a typo in a YAML file or a `--set` override is caught
before a single GPU-hour is spent. Reading, key checks and type conversion are the pipeline's too
(`infra.config_schema`); what is here is what only a training run knows: its fields, their ranges,
the batch arithmetic and the preset layering.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import yaml

from infra.config_schema import ConfigSchema
from pretrain.errors import ConfigError
from pretrain.mixture import check_mix_entries
from pretrain.presets import preset_dict


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


@dataclass
class ModelConfig:
    """Shape of the GPT model. `vocab_size` is the tokenizer's true size; the embedding is padded."""

    vocab_size: int = 50257
    seq_len: int = 1024  # maximum context length (learned positional table size)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # grouped-query attention; None means n_head (plain multi-head)
    d_model: int = 768
    d_ff: int | None = None  # None: 4*d_model for gelu, Llama's rounded 8/3*d_model for swiglu
    pos_emb: Literal["learned", "sinusoidal", "rope"] = "learned"
    rope_theta: float = 10000.0
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    mlp: Literal["gelu", "swiglu"] = "gelu"
    bias: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = True
    init_std: float = 0.02
    # embedding rows padded for tensor-core-friendly LM-head shapes; the logits of real ids are unchanged
    pad_vocab_multiple: int = 128
    # packed sequences: a token attends only to earlier tokens of its own document (documents end with eos_id,
    # which the trainer takes from the dataset); doc_positions_reset restarts positions at each document start
    doc_mask: bool = False
    doc_positions_reset: bool = False
    eos_id: int | None = None
    qk_norm: bool = False  # RMSNorm on the query and key projections (OLMo 2)
    z_loss: float = 0.0  # > 0: training loss += z_loss * mean(logsumexp(logits)^2) (PaLM: 1e-4)

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if self.mlp == "gelu" else _llama_ffn_width(self.d_model)
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "d_ff", "pad_vocab_multiple"):
            _require(getattr(self, name) > 0, f"model.{name}", f"must be positive, got {getattr(self, name)}")
        _require(
            self.d_model % self.n_head == 0,
            "model.n_head",
            f"{self.n_head} heads do not divide model.d_model={self.d_model}; pick a divisor of d_model",
        )
        _require(
            self.n_kv_head > 0 and self.n_head % self.n_kv_head == 0,
            "model.n_kv_head",
            f"{self.n_kv_head} must divide model.n_head={self.n_head} (grouped-query attention groups)",
        )
        _require(self.head_dim % 2 == 0 or self.pos_emb != "rope", "model.pos_emb", "rope needs an even head_dim")
        _require(self.pos_emb in ("learned", "sinusoidal", "rope"), "model.pos_emb", "use learned|sinusoidal|rope")
        _require(self.norm in ("layernorm", "rmsnorm"), "model.norm", "use layernorm|rmsnorm")
        _require(self.mlp in ("gelu", "swiglu"), "model.mlp", "use gelu|swiglu")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(
            not self.doc_mask or self.eos_id is not None,
            "model.eos_id",
            "model.doc_mask needs the EOS id that ends documents (the trainer takes it from the dataset's manifest)",
        )
        _require(
            self.doc_mask or not self.doc_positions_reset,
            "model.doc_positions_reset",
            "needs model.doc_mask=true (positions restart where attention stops crossing documents)",
        )
        _require(self.z_loss >= 0, "model.z_loss", f"must be >= 0 (0 disables), got {self.z_loss}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Embedding rows: the vocabulary rounded up so the LM-head matmul hits tensor-core friendly shapes."""
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m


def _llama_ffn_width(d_model: int, multiple_of: int = 256) -> int:
    """SwiGLU hidden width as in Llama: 2/3 of 4*d_model, rounded up to a multiple of 256."""
    hidden = int(2 * (4 * d_model) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then cosine decay to `min_lr_ratio * lr` at train.max_steps, or warmup-stable-decay
    (pretrain/schedule.py)."""

    lr: float
    warmup_steps: int
    min_lr_ratio: float = 0.1
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = 0.2  # wsd: the last fraction of train.max_steps decays to min_lr_ratio
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"  # wsd: the decay's curve
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        _require(self.lr > 0, "optim.lr", f"must be positive, got {self.lr}")
        _require(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.schedule in ("cosine", "wsd"), "optim.schedule", f"got {self.schedule!r}; use cosine|wsd")
        _require(
            0.0 < self.decay_fraction <= 1.0, "optim.decay_fraction", f"must be in (0, 1], got {self.decay_fraction}"
        )
        _require(
            self.decay_shape in ("linear", "cosine", "1-sqrt"),
            "optim.decay_shape",
            f"got {self.decay_shape!r}; use linear|cosine|1-sqrt",
        )
        _require(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            "optim.betas",
            f"needs two values in [0, 1), got {list(self.betas)}; e.g. [0.9, 0.95]",
        )
        _require(self.eps > 0, "optim.eps", f"must be positive, got {self.eps}")
        _require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 disables clipping), got {self.grad_clip}")


@dataclass
class DataConfig:
    """Where the token shards are and how samples are drawn from them."""

    path: str | None = None  # dataset dir written by `pipeline run` (holds manifest.json)
    # a weighted mixture instead of `path`: [{path, weight, name}], weights normalised (pretrain/mixture.py)
    mix: list[dict] | None = None
    seed: int = 1234  # shuffles the sample order; the same seed and data give the same batches
    val_samples: int = 64  # fixed validation windows (per mixture source), evaluated every train.eval_interval steps
    verify_checksums: bool = True  # hash each shard against manifest.json before training

    def __post_init__(self) -> None:
        _require(self.val_samples >= 0, "data.val_samples", f"must be >= 0, got {self.val_samples}")
        _require(not (self.path and self.mix), "data.mix", "set either data.path or data.mix, not both")
        if self.mix is not None:
            _require(len(self.mix) > 0, "data.mix", "is empty; list at least one {path, weight, name}")
            self.mix = check_mix_entries(self.mix)

    @property
    def tokenizer_dataset(self) -> str | None:
        """The dataset whose tokenizer the run uses (every mixture source shares it): data.path or the first source."""
        return self.mix[0]["path"] if self.mix else self.path


PRECISIONS = ("auto", "bf16", "fp32", "fp8")
FP8_RECIPES = ("tensorwise", "rowwise")
CHECKPOINTING_MODES = ("every", "every_k", "off")


@dataclass
class TrainConfig:
    """Batch, schedule length, checkpointing cadence and memory savers."""

    global_batch_tokens: int  # tokens per optimizer step, over all ranks and accumulation steps
    micro_batch_size: int  # sequences per rank per forward/backward
    max_steps: int
    eval_interval: int
    save_interval: int
    keep_last: int = 3  # checkpoints kept on disk; older ones are deleted after a successful save
    ds_config: str = "ds_configs/zero3_bf16.json"
    # bf16 | fp32 | fp8 | auto: auto keeps the DeepSpeed JSON's explicit bf16.enabled, or (JSON "auto") bf16 on CUDA
    # only; fp8 trains the blocks' linear layers in float8 and the rest in bf16 (pretrain/fp8.py)
    precision: Literal["auto", "bf16", "fp32", "fp8"] = "auto"
    fp8_recipe: Literal["tensorwise", "rowwise"] = "tensorwise"  # torchao's float8 scaling: per tensor, or per row
    fp8_emulate: bool = False  # float8 casts with high-precision matmuls: fp8 numerics on a CPU or a pre-Ada GPU
    compile: bool = False  # torch.compile every transformer block (pretrain/compile.py)
    # dtype gradients are reduce-scattered across ranks and accumulated over micro-batches in, under bf16 (an fp32
    # model always uses fp32); fp32 as Megatron and torchtitan. Fills the JSON's communication_data_type and
    # data_types.grad_accum_dtype; pretrain/engine.py checks the running engine uses it
    grad_dtype: Literal["fp32", "bf16"] = "fp32"
    # > 0: the training loss in chunks of this many tokens (pretrain/chunked_ce.py), so the fp32 logits of the
    # whole micro-batch (micro x seq x vocab) never exist at once; 0: the plain cross-entropy; null (default):
    # chunked where the plain path's temporaries would reach 1 GiB (chunked_ce.loss_chunk_tokens)
    loss_chunk_tokens: int | None = None
    activation_checkpointing: Literal["every", "every_k", "off"] = "every"
    checkpoint_every_k: int = 1  # with activation_checkpointing=every_k: recompute every k-th block
    partition_activations: bool = False
    cpu_checkpointing: bool = False
    seed: int = 1234
    max_bad_steps: int = 5  # consecutive non-finite steps before the run aborts
    collective_timeout_s: float = 1800.0  # a collective stuck this long fails the job, naming op and ranks
    spike_z: float = 0.0  # loss this many std above its running mean is a spike (logged, counted); 0 = off
    spike_ema: float = 0.98  # decay of the loss mean/variance the spike test uses
    spike_warmup: int = 20  # steps of statistics before spikes are judged
    spike_skip: bool = False  # skip the optimizer update of a spike step (as for a non-finite step)
    lock_stale_s: float = 120.0  # RUN/LOCK whose heartbeat is older than this belongs to a dead job (run_folder.py)

    def __post_init__(self) -> None:
        for name in ("global_batch_tokens", "micro_batch_size", "max_steps", "eval_interval", "save_interval"):
            _require(getattr(self, name) > 0, f"train.{name}", f"must be positive, got {getattr(self, name)}")
        _require(self.keep_last >= 1, "train.keep_last", f"must be >= 1, got {self.keep_last}")
        _require(self.precision in PRECISIONS, "train.precision", f"got {self.precision!r}; use {'|'.join(PRECISIONS)}")
        _require(self.fp8_recipe in FP8_RECIPES, "train.fp8_recipe", f"got {self.fp8_recipe!r}; use tensorwise|rowwise")
        _require(self.grad_dtype in ("fp32", "bf16"), "train.grad_dtype", f"got {self.grad_dtype!r}; use fp32|bf16")
        _require(
            self.loss_chunk_tokens is None or self.loss_chunk_tokens >= 0,
            "train.loss_chunk_tokens",
            f"got {self.loss_chunk_tokens}; use null (auto), 0 (off) or > 0",
        )
        _require(
            self.activation_checkpointing in CHECKPOINTING_MODES,
            "train.activation_checkpointing",
            f"got {self.activation_checkpointing!r}; use one of {'|'.join(CHECKPOINTING_MODES)}",
        )
        _require(
            self.checkpoint_every_k >= 1, "train.checkpoint_every_k", f"must be >= 1, got {self.checkpoint_every_k}"
        )
        _require(
            not (self.cpu_checkpointing and not self.partition_activations),
            "train.cpu_checkpointing",
            "needs train.partition_activations=true (DeepSpeed offloads only partitioned activations)",
        )
        _require(self.max_bad_steps >= 1, "train.max_bad_steps", f"must be >= 1, got {self.max_bad_steps}")
        _require(
            self.collective_timeout_s > 0,
            "train.collective_timeout_s",
            f"must be positive seconds, got {self.collective_timeout_s}",
        )
        _require(self.spike_z >= 0, "train.spike_z", f"must be >= 0 (0 disables), got {self.spike_z}")
        _require(0 < self.spike_ema < 1, "train.spike_ema", f"must be in (0, 1), got {self.spike_ema}")
        _require(self.lock_stale_s > 0, "train.lock_stale_s", f"must be positive seconds, got {self.lock_stale_s}")

    @property
    def tokens_per_run(self) -> int:
        return self.global_batch_tokens * self.max_steps


@dataclass
class LogConfig:
    """Where metrics go; `peak_tflops` (per GPU, bf16 dense) turns measured throughput into MFU; `wandb` adds a
    Weights & Biases run (project, entity, group, name: the run folder's name unless set)."""

    interval: int = 10
    tensorboard: bool = True
    csv: bool = True
    peak_tflops: float | None = None
    wandb: bool = False
    wandb_project: str = "pretrain"
    wandb_entity: str | None = None
    wandb_group: str | None = None
    wandb_name: str | None = None

    def __post_init__(self) -> None:
        _require(self.interval >= 1, "log.interval", f"must be >= 1, got {self.interval}")
        _require(
            self.peak_tflops is None or self.peak_tflops > 0,
            "log.peak_tflops",
            f"must be positive or null, got {self.peak_tflops} (e.g. 989 for an H100 SXM in bf16)",
        )
        _require(
            not self.wandb or importlib.util.find_spec("wandb") is not None,
            "log.wandb",
            "is true but the wandb package is not installed: pip install wandb, or set log.wandb=false",
        )


@dataclass
class RunConfig:
    """Everything one training run needs; `to_dict()` / `from_dict()` round-trip through YAML."""

    preset: str
    model: ModelConfig
    optim: OptimConfig
    data: DataConfig
    train: TrainConfig
    log: LogConfig

    def __post_init__(self) -> None:
        _require(
            not (self.model.z_loss and self.train.loss_chunk_tokens),
            "model.z_loss",
            "the chunked loss (train.loss_chunk_tokens > 0) does not compute it; set one of them to 0",
        )

    def grad_accum_steps(self, world_size: int) -> int:
        """global_batch_tokens / (micro_batch_size * seq_len * world_size); ConfigError unless a whole number >= 1."""
        return check_batch_arithmetic(
            self.train.global_batch_tokens, self.train.micro_batch_size, self.model.seq_len, world_size
        )

    def to_dict(self) -> dict:
        out: dict = {"preset": self.preset}
        for section in SCHEMA.sections:
            values = asdict(getattr(self, section))
            out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the full resolved config as YAML; `load_config(None, path)` reads it back equal."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Build and validate from the nested shape of `to_dict()` (a saved config.yaml); unknown keys are errors."""
        _require(isinstance(d.get("preset"), str), "preset", "missing; name the preset this config derives from")
        return SCHEMA.build(SCHEMA.layer({}, d, origin="config"))


SCHEMA = ConfigSchema(RunConfig, ConfigError)


def check_batch_arithmetic(global_batch_tokens: int, micro_batch_size: int, seq_len: int, world_size: int) -> int:
    """grad_accum such that micro_batch * seq_len * grad_accum * world_size == global_batch_tokens exactly."""
    _require(world_size >= 1, "world_size", f"must be >= 1, got {world_size}")
    per_pass = micro_batch_size * seq_len * world_size
    grad_accum, remainder = divmod(global_batch_tokens, per_pass)
    if remainder == 0 and grad_accum >= 1:
        return grad_accum
    raise ConfigError(_batch_fix_message(global_batch_tokens, micro_batch_size, seq_len, world_size))


def _batch_fix_message(global_batch_tokens: int, micro_batch_size: int, seq_len: int, world_size: int) -> str:
    """One line: the product that failed, and the nearest global batch sizes (or micro batches) that work."""
    per_pass = micro_batch_size * seq_len * world_size
    below = global_batch_tokens // per_pass * per_pass
    nearest = [n for n in (below, below + per_pass) if n > 0]
    fix = " or ".join(f"train.global_batch_tokens={n}" for n in nearest)
    sequences, seq_remainder = divmod(global_batch_tokens, seq_len)
    micro_fits = [m for m in range(1, micro_batch_size) if seq_remainder == 0 and sequences % (m * world_size) == 0]
    if micro_fits:
        fix += f", or train.micro_batch_size={micro_fits[-1]}"
    return (
        f"train.global_batch_tokens: {global_batch_tokens} != micro_batch_size {micro_batch_size} x "
        f"model.seq_len {seq_len} x grad_accum x world_size {world_size}: {global_batch_tokens} / {per_pass} "
        f"= {global_batch_tokens / per_pass:g} is not a whole number >= 1; set {fix}"
    )


def load_config(
    preset: str | None, yaml_path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> RunConfig:
    """Preset defaults, then the YAML file, then `section.key=value` overrides; the last one wins."""
    file_values = SCHEMA.read_yaml(yaml_path) if yaml_path else {}
    name = preset or file_values.get("preset")
    _require(bool(name), "preset", "none given; pass --preset NAME or put `preset: NAME` in the YAML file")
    tree = SCHEMA.layer({}, preset_dict(name), origin=f"preset {name}")
    SCHEMA.layer(tree, file_values, origin=str(yaml_path))
    for override in overrides:
        SCHEMA.set(tree, *SCHEMA.parse_override(override), origin="--set")
    tree["preset"] = name
    return SCHEMA.build(tree)
