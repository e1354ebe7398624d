"""The DeepSpeed engine around the single-device GPT: distributed start, ZeRO-3 config, model, optimizer groups.

The model file knows nothing of DeepSpeed; everything distributed is applied here, from outside:
- the process group (deepspeed launcher, mpirun/mpiexec, srun, or torchrun-style env),
- the DeepSpeed JSON, whose "auto" values are filled from the run config and whose explicit values must agree,
- construction under `deepspeed.zero.Init` so a model larger than one rank's memory is never whole on one rank,
- float8 training of the blocks' linear layers (`train.precision: fp8`, pretrain/fp8.py) and torch.compile per
  block (`train.compile`, pretrain/compile.py), both applied to the partitioned model before DeepSpeed hooks it,
- activation checkpointing of the transformer blocks through `deepspeed.checkpointing`,
- AdamW parameter groups with weight decay on matrices only,
- gradients reduced and accumulated in train.grad_dtype (fp32 by default), checked on the running engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import deepspeed
import torch
from deepspeed import DeepSpeedEngine
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.base_optimizer import ZeROOptimizer

from infra import launcher_env
from pretrain import cpu_shm, jit_ops, rendezvous, schedule
from pretrain.chunked_ce import enable_chunked_loss, loss_chunk_tokens
from pretrain.compile import compile_blocks
from pretrain.config import ModelConfig, RunConfig
from pretrain.errors import ConfigError
from pretrain.fp8 import check_fp8_hardware, convert_to_fp8, fp8_summary
from pretrain.model import GPT

# builds the single-device model from its config (GPT, or a test's variant of it)
ModelFactory = Callable[[ModelConfig], torch.nn.Module]
# a DeepSpeed JSON value: a number, string, bool, list or nested object
JsonValue = bool | int | float | str | list | dict | None

DS_CONFIG_DIR = Path(__file__).resolve().parent.parent / "ds_configs"


# --------------------------------------------------------------------------- distributed start


def init_distributed(timeout_s: float | None = None) -> tuple[int, int]:
    """Start the process group for any launcher and return (rank, world_size).

    deepspeed/torchrun set RANK etc.; srun's variables are mapped to them (launcher_env); mpirun/mpiexec are
    found by DeepSpeed's MPI discovery. CPU (DS_ACCELERATOR=cpu) uses gloo, CUDA uses nccl.
    """
    os.environ.update(launcher_env.torch_distributed_env())
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    backend = "nccl" if get_accelerator().device_name() == "cuda" else "gloo"
    timeout = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}  # train.collective_timeout_s
    port = int(os.environ["MASTER_PORT"])  # MPI discovery would otherwise reset it to DeepSpeed's 29500
    jit_ops.load_comm_ops()  # before the rendezvous: a build killed earlier must not hang this launch
    store = rendezvous.guard(port, timeout.get("timeout", timedelta(minutes=30)))  # never join another job's
    deepspeed.init_distributed(
        dist_backend=backend, auto_mpi_discovery=True, distributed_port=port, verbose=False, **timeout
    )
    del store  # torch's rendezvous holds the server now
    if backend == "gloo":
        cpu_shm.release_segments()  # DeepSpeed's CPU op never unlinks them: each launch left ~27 MB per rank in RAM
    if get_accelerator().device_name() == "cuda":
        torch.cuda.set_device(launcher_env.local_rank())
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def device() -> torch.device:
    return torch.device(get_accelerator().current_device_name())


# --------------------------------------------------------------------------- DeepSpeed JSON


def load_ds_json(path: str | os.PathLike) -> dict:
    """Read a DeepSpeed JSON; a relative path is tried against the working directory, then the package."""
    candidates = [Path(path), DS_CONFIG_DIR.parent / path, DS_CONFIG_DIR / Path(path).name]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as err:
                raise ConfigError(f"{candidate}:{err.lineno}: invalid JSON ({err.msg})") from err
    raise ConfigError(
        f"train.ds_config: {path} not found; use one of {sorted(p.name for p in DS_CONFIG_DIR.glob('*.json'))}"
    )


def computed_ds_values(cfg: RunConfig, world_size: int, run_dir: str | os.PathLike) -> dict[str, JsonValue]:
    """The DeepSpeed keys derived from the run config, as dotted paths."""
    accum = cfg.grad_accum_steps(world_size)
    opt, train, log = cfg.optim, cfg.train, cfg.log
    return {
        "train_batch_size": train.micro_batch_size * accum * world_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": opt.grad_clip,
        "optimizer.params.lr": opt.lr,
        "optimizer.params.betas": list(opt.betas),
        "optimizer.params.eps": opt.eps,
        "optimizer.params.weight_decay": opt.weight_decay,
        "tensorboard.enabled": bool(log.tensorboard),
        "tensorboard.output_path": str(run_dir),
        "csv_monitor.enabled": bool(log.csv),
        "csv_monitor.output_path": str(run_dir),
    }


def resolve_ds_config(template: dict, computed: dict[str, JsonValue], source: str = "ds_config") -> dict:
    """Fill "auto"/missing keys from `computed`; an explicit value that disagrees is an error, never overridden."""
    resolved = json.loads(json.dumps(template))
    for dotted, value in computed.items():
        *parents, leaf = dotted.split(".")
        node = resolved
        for key in parents:
            node = node.setdefault(key, {})
        current = node.get(leaf, "auto")
        if current == "auto":
            node[leaf] = value
        elif not _same(current, value):
            raise ConfigError(
                f"{source}: {dotted}={current!r} contradicts the run config ({value!r}); "
                f'set it to "auto" in the JSON or change the run config so they agree'
            )
    return resolved


def _same(a: JsonValue, b: JsonValue) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def ds_config_for_run(cfg: RunConfig, world_size: int, run_dir: str | os.PathLike) -> dict:
    """Load train.ds_config, fill and check it; the trainer writes the result to RUN/ds_config.json (rank 0)."""
    cfg.grad_accum_steps(world_size)  # ConfigError for batch arithmetic before any JSON problem
    if cfg.train.precision == "fp8":
        check_fp8_hardware(cfg.train.fp8_emulate, get_accelerator().device_name())
    path = cfg.train.ds_config
    template = load_ds_json(path)
    refuse_json_scheduler(template, path)
    precision = precision_values(cfg.train.precision, template)
    bf16 = precision.get("bf16.enabled", template.get("bf16", {}).get("enabled") is True)
    gradients = gradient_values(cfg.train.grad_dtype, bf16)
    computed = computed_ds_values(cfg, world_size, run_dir) | precision | gradients
    return resolve_ds_config(template, computed, source=str(path))


def refuse_json_scheduler(template: dict, path: str | os.PathLike) -> None:
    """The learning-rate schedule is optim.* (pretrain/schedule.py); a JSON that names its own would be silently
    replaced by it, so it is refused."""
    if "scheduler" in template:
        name = template["scheduler"].get("type", "?") if isinstance(template["scheduler"], dict) else "?"
        raise ConfigError(
            f"{path}: names its own scheduler ({name}); the trainer's learning-rate schedule is optim.schedule "
            "(cosine or wsd, with optim.warmup_steps, optim.min_lr_ratio, optim.decay_fraction, optim.decay_shape): "
            'remove the "scheduler" block from the JSON and set those keys instead'
        )


def precision_values(precision: str, template: dict) -> dict[str, JsonValue]:
    """`bf16.enabled` from train.precision (fp8 is bf16 outside the float8 matmuls); "auto" keeps the JSON's
    explicit choice, or picks bf16 exactly on CUDA."""
    if precision != "auto":
        return {"bf16.enabled": precision in ("bf16", "fp8")}
    if template.get("bf16", {}).get("enabled", "auto") != "auto":
        return {}
    return {"bf16.enabled": get_accelerator().device_name() == "cuda"}


def gradient_values(grad_dtype: str, bf16: bool) -> dict[str, str]:
    """The dtype ZeRO reduce-scatters gradients in and accumulates them over micro-batches in.

    DeepSpeed defaults both to the model dtype, so a bf16 run would sum 64 ranks' gradients and every micro-batch
    in bf16 (8 significant bits). train.grad_dtype (fp32 unless asked) sets both; an fp32 model uses fp32.
    """
    dtype = grad_dtype if bf16 else "fp32"
    return {"communication_data_type": dtype, "data_types.grad_accum_dtype": dtype}


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


# --------------------------------------------------------------------------- model and optimizer groups


def build_model(cfg: RunConfig, ds_config: dict, model_factory: ModelFactory = GPT) -> torch.nn.Module:
    """The GPT, built partitioned under ZeRO-3 (`zero.Init`) so no rank ever holds the whole model."""
    tokens = cfg.train.micro_batch_size * cfg.model.seq_len
    chunk = loss_chunk_tokens(cfg.train.loss_chunk_tokens, tokens, cfg.model.vocab_size)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=zero_stage(ds_config) == 3):
        model = model_factory(cfg.model)
        if chunk:  # inside zero.Init: ZeRO-3 must learn that the loss reads the head weight
            enable_chunked_loss(model, chunk)
    if cfg.train.precision == "fp8":
        convert_to_fp8(model, cfg.train.fp8_recipe, cfg.train.fp8_emulate)
    if cfg.train.compile:
        compile_blocks(model, zero3=zero_stage(ds_config) == 3)
    configure_activation_checkpointing(model, cfg)
    return model


def configure_activation_checkpointing(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Wrap blocks with deepspeed.checkpointing: every block, every k-th, or off."""
    mode = cfg.train.activation_checkpointing
    if mode == "off":
        return
    every_k = 1 if mode == "every" else int(cfg.train.checkpoint_every_k)
    deepspeed.checkpointing.configure(
        None,
        partition_activations=bool(cfg.train.partition_activations),
        checkpoint_in_cpu=bool(cfg.train.cpu_checkpointing),
        num_checkpoints=len(model.blocks),
    )
    model.set_activation_checkpointing(deepspeed.checkpointing.checkpoint, every_k=every_k)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay every matrix (>=2-D: linear weights and the tied embedding/LM head), none on 1-D.

    Biases and norm gains are exempt: decaying them pulls scale/shift parameters toward 0, which only hurts
    (they carry no capacity to regularise). Embeddings are decayed, as in GPT-2/nanoGPT/Megatron, because with
    tied weights the embedding *is* the output projection. Shapes come from `ds_shape` under ZeRO-3, where
    the local tensor is a flat partition.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        shape = getattr(param, "ds_shape", param.shape)
        (decay if len(shape) >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_engine(
    cfg: RunConfig,
    ds_config: dict,
    model_factory: ModelFactory = GPT,
    load_weights: Callable[[torch.nn.Module], None] | None = None,
) -> DeepSpeedEngine:
    """deepspeed.initialize with the JSON's optimizer over our parameter groups and the run's learning-rate schedule
    (pretrain/schedule.py). `load_weights` fills the partitioned model before the optimizer takes its master copy
    (pretrain/interop/hf_init.py)."""
    model = build_model(cfg, ds_config, model_factory)
    if load_weights is not None:
        load_weights(model)
    groups = decay_groups(model, cfg.optim.weight_decay)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=groups, config=ds_config, lr_scheduler=schedule.for_run(cfg)
    )
    lines = [check_gradient_dtypes(engine.optimizer, ds_config)]
    if cfg.train.precision == "fp8":
        lines.append(fp8_summary(model))
    if engine.global_rank == 0:
        print("\n".join(lines), flush=True)
    return engine


def running_gradient_dtypes(optimizer: ZeROOptimizer | torch.optim.Optimizer) -> dict[str, str]:
    """The dtypes the ZeRO optimizer really reduces gradients in and accumulates them in (ZeRO-3: its buffer's)."""
    buffer = getattr(optimizer, "grad_partitions_flat_buffer", None)
    accumulate = buffer.dtype if buffer is not None else getattr(optimizer, "gradient_accumulation_dtype", None)
    reduce = getattr(optimizer, "communication_data_type", None)
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return {
        "communication_data_type": names.get(reduce, str(reduce)),
        "data_types.grad_accum_dtype": names.get(accumulate, str(accumulate)),
    }


def check_gradient_dtypes(optimizer: ZeROOptimizer | torch.optim.Optimizer, ds_config: dict) -> str:
    """Refuse an engine whose gradient dtypes differ from the resolved JSON's; return the line the trainer logs.

    The JSON is only a request: a DeepSpeed version or feature (sequence parallelism, torch autocast) may pick
    other dtypes without a word, and a bf16 sum over many ranks loses the small gradients.
    """
    got = running_gradient_dtypes(optimizer)
    want = {
        "communication_data_type": ds_config.get("communication_data_type"),
        "data_types.grad_accum_dtype": ds_config.get("data_types", {}).get("grad_accum_dtype"),
    }
    wrong = [f"{key}: asked {want[key]}, running {got[key]}" for key in got if got[key] != want[key]]
    if wrong:
        raise ConfigError(
            f"DeepSpeed's {type(optimizer).__name__} ignored the gradient dtypes of the JSON ({'; '.join(wrong)}); "
            "remove the JSON feature that overrides them, or set train.grad_dtype to what this DeepSpeed runs"
        )
    reduced, accumulated = got["communication_data_type"], got["data_types.grad_accum_dtype"]
    return f"gradients: reduced across ranks in {reduced}, accumulated over micro-batches in {accumulated}"
