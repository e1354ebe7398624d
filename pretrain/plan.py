"""Size a run before it starts: parameters, FLOPs per token, batch arithmetic and ZeRO-3 memory per GPU.

Everything comes from the config alone (no model is built, no GPU is touched), so `pretrain plan` answers
"does gpt3-6.7b fit on 4 nodes, and what is grad_accum there?" in seconds on a laptop. The memory figure is
DeepSpeed's own ZeRO-3 model-states estimator (the "cold" variant, which takes parameter counts instead of a
model); activations come on top and depend on micro batch and activation checkpointing.

Without --world-size a preset plans at one node (--gpus-per-node, 8), or, when its global batch does not divide
there (debug, llama-debug: 1,024 tokens = 4 x 2 x 128), at the largest world size below one node where it does.
`--data DIR` takes the vocabulary from the dataset's manifest.json, as the trainer does. The time to train is
always shown: for every GPU in the peak table (pretrain/metrics.py), or for the one peak that --peak-tflops
(or log.peak_tflops) names.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from dataclasses import dataclass

from data_pipeline.shards import ShardError, read_manifest
from pretrain.config import ModelConfig, RunConfig, load_config
from pretrain.errors import ConfigError, UsageError
from pretrain.flops import attention_params, count_params, flops_per_token
from pretrain.metrics import PEAK_TFLOPS

GIB = 2**30


@dataclass
class Cluster:
    """Data-parallel world: ZeRO-3 shards over every rank, so dp_ranks == world_size."""

    nodes: int
    gpus_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="named preset (see pretrain/presets.py); or name it in --config")
    parser.add_argument("--config", help="YAML file in the shape of a saved run config, applied over the preset")
    parser.add_argument(
        "--world-size",
        type=int,
        help="total GPUs (data-parallel ranks); default: one node, or the largest world below it where the "
        "preset's batch divides (1..8 ranks for debug presets)",
    )
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    parser.add_argument("--data", help="dataset folder (manifest.json): the vocabulary comes from it, as in training")
    parser.add_argument(
        "--mfu", type=float, default=0.4, help="model FLOPs utilization for the time estimate (default 0.4)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="peak dense bf16 TFLOP/s per GPU for the time estimate (default: log.peak_tflops, else every GPU of "
        "the peak table)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.mfu <= 1:
        raise UsageError(f"--mfu: must be in (0, 1], got {args.mfu}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise UsageError(f"--peak-tflops: must be positive, got {args.peak_tflops}")
    cfg = load_config(args.preset, args.config, [*vocabulary_override(args.data), *args.overrides])
    world_size = args.world_size if args.world_size is not None else default_world_size(cfg, args.gpus_per_node)
    cluster = cluster_for(world_size, args.gpus_per_node)
    grad_accum = cfg.grad_accum_steps(cluster.world_size)  # ConfigError (exit 2) before the slow DeepSpeed import
    lines = plan_lines(cfg, cluster, grad_accum)
    if args.world_size is None and cluster.world_size != args.gpus_per_node:
        lines.append(
            (
                "note",
                f"no --world-size: {cluster.world_size} GPUs, the largest world up to one {args.gpus_per_node}-GPU "
                f"node where the {cfg.train.global_batch_tokens:,}-token batch divides",
            )
        )
    for peak, gpus in peaks(args.peak_tflops or cfg.log.peak_tflops):
        lines.append(("time to train", time_to_train(cfg, cluster, args.mfu, peak, gpus)))
    for label, value in lines:
        print(f"{label:<17}{value}")
    print(deepspeed_zero3_table(cfg.model, cluster), end="")
    return 0


def vocabulary_override(data_dir: str | None) -> list[str]:
    """`model.vocab_size=<the dataset's>` for --data (the trainer takes it from there too), else nothing."""
    if not data_dir:
        return []
    try:
        return [f"model.vocab_size={int(read_manifest(data_dir)['vocab_size'])}"]
    except (ShardError, KeyError, ValueError) as err:
        raise UsageError(
            f"--data: {data_dir}: no usable manifest.json ({err}); pass the folder `pipeline run` wrote"
        ) from err


def default_world_size(cfg: RunConfig, gpus_per_node: int) -> int:
    """One node, or the largest world size below it where the batch arithmetic divides (debug presets: 4)."""
    for world_size in range(max(gpus_per_node, 1), 0, -1):
        try:
            cfg.grad_accum_steps(world_size)
            return world_size
        except ConfigError:
            continue
    return gpus_per_node  # nothing divides: planning at one node names the fix


def peaks(peak_tflops: float | None) -> list[tuple[float, str]]:
    """(peak TFLOP/s, GPU names): the one given, else each distinct peak of the table, slowest first."""
    if peak_tflops:
        return [(float(peak_tflops), "")]
    by_peak: dict[float, list[str]] = {}
    for name, peak in PEAK_TFLOPS.items():
        by_peak.setdefault(peak, []).append(name)
    return [(peak, "/".join(names)) for peak, names in sorted(by_peak.items())]


def cluster_for(world_size: int | None, gpus_per_node: int) -> Cluster:
    """Nodes x GPUs per node for a world size; a partial last node is refused (launchers fill whole nodes)."""
    if gpus_per_node < 1:
        raise UsageError(f"--gpus-per-node: must be >= 1, got {gpus_per_node}")
    world_size = gpus_per_node if world_size is None else world_size
    if world_size < 1:
        raise UsageError(f"--world-size: must be >= 1, got {world_size}")
    if world_size <= gpus_per_node:
        return Cluster(nodes=1, gpus_per_node=world_size)
    if world_size % gpus_per_node:
        raise UsageError(
            f"--world-size: {world_size} GPUs is not a whole number of {gpus_per_node}-GPU nodes; "
            f"use a multiple of {gpus_per_node} or set --gpus-per-node"
        )
    return Cluster(nodes=world_size // gpus_per_node, gpus_per_node=gpus_per_node)


def plan_lines(cfg: RunConfig, cluster: Cluster, grad_accum: int) -> list[tuple[str, str]]:
    """The labelled lines of the plan, in print order."""
    m, t = cfg.model, cfg.train
    total = count_params(m)
    per_token = flops_per_token(m)
    product = t.micro_batch_size * m.seq_len * grad_accum * cluster.world_size
    return [
        ("preset", cfg.preset),
        ("model", describe_model(m)),
        ("parameters", f"{total:,} total, {count_params(m, exclude_embeddings=True):,} non-embedding"),
        ("flops per token", f"{per_token:.4g} (training: 6N + attention, N = matmul weights)"),
        ("world", f"{cluster.world_size} GPUs = {cluster.nodes} node(s) x {cluster.gpus_per_node} GPUs per node"),
        (
            "batch",
            f"{t.micro_batch_size} x {m.seq_len} x {grad_accum} x {cluster.world_size} = {product:,} tokens per step"
            " (micro_batch x seq_len x grad_accum x dp_ranks = global_batch_tokens)",
        ),
        ("tokens per run", f"{t.tokens_per_run:,} ({t.max_steps:,} steps x {t.global_batch_tokens:,})"),
        ("flops per run", f"{per_token * t.tokens_per_run:.4g}"),
        ("zero3 per GPU", zero3_headline(m, cluster)),
    ]


def time_to_train(cfg: RunConfig, cluster: Cluster, mfu: float, peak_tflops: float, gpus: str = "") -> str:
    """Wall-clock days for the whole run if every GPU sustains `mfu` of `peak_tflops`."""
    total_flops = flops_per_token(cfg.model) * cfg.train.tokens_per_run
    cluster_flops_per_s = cluster.world_size * peak_tflops * 1e12 * mfu
    seconds = total_flops / cluster_flops_per_s
    tokens_per_gpu_s = cluster_flops_per_s / flops_per_token(cfg.model) / cluster.world_size
    return (
        f"{_duration(seconds)} on {cluster.world_size} GPUs at MFU {mfu:g} of {peak_tflops:g} TFLOP/s"
        f"{f' ({gpus})' if gpus else ''} ({tokens_per_gpu_s:,.0f} tokens/s per GPU)"
    )


def _duration(seconds: float) -> str:
    """'12.3 days' for real runs; hours, minutes or seconds for short ones (a debug run is not '0.0 days')."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.3g} seconds"


def describe_model(m: ModelConfig) -> str:
    return (
        f"{m.n_layer} layers, d_model {m.d_model}, {m.n_head} heads ({m.n_kv_head} kv) of {m.head_dim}, "
        f"d_ff {m.d_ff}, seq_len {m.seq_len}, vocab {m.vocab_size} (padded {m.padded_vocab_size}), "
        f"{m.pos_emb}/{m.norm}/{m.mlp}"
    )


def largest_layer_params(m: ModelConfig) -> int:
    """Parameters of the largest single module (what ZeRO-3 gathers at once): usually the token embedding."""
    mlp_in = m.d_model * m.d_ff + (m.d_ff if m.bias else 0)
    mlp_out = m.d_ff * m.d_model + (m.d_model if m.bias else 0)
    positional = m.seq_len * m.d_model if m.pos_emb == "learned" else 0
    qkv = attention_params(m) - (m.d_model * m.d_model + (m.d_model if m.bias else 0))
    return max(m.padded_vocab_size * m.d_model, positional, qkv, mlp_in, mlp_out)


def zero3_headline(m: ModelConfig, cluster: Cluster) -> str:
    """DeepSpeed's per-GPU ZeRO-3 model-states estimate without offload (the bf16 GPU-only default)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # arithmetic only: no "Setting accelerator to CPU" warning
    # imported here, not at the top: after DS_ACCELERATOR is set, and after the config checks (a bad one exits 2
    # before the slow import)
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    _, gpu_bytes, _ = estimate_zero3_model_states_mem_needs(
        total_params=count_params(m),
        largest_layer_params=largest_layer_params(m),
        num_gpus_per_node=cluster.gpus_per_node,
        num_nodes=cluster.nodes,
        cpu_offload=False,
        cpu_offload_params=False,
        zero_init=True,
    )
    return f"{gpu_bytes / GIB:.2f} GiB params + grads + optimizer states, no offload (activations extra)"


def deepspeed_zero3_table(m: ModelConfig, cluster: Cluster) -> str:
    """DeepSpeed's full offload-options table, captured so it prints after the plan lines, indented."""
    # imported here, not at the top: see zero3_headline (which runs first)
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        estimate_zero3_model_states_mem_needs_all_cold(
            total_params=count_params(m),
            largest_layer_params=largest_layer_params(m),
            num_gpus_per_node=cluster.gpus_per_node,
            num_nodes=cluster.nodes,
        )
    return "".join(f"  {line}\n" for line in buffer.getvalue().splitlines())
