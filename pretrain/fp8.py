"""Float8 training of the transformer's linear layers through torchao (`train.precision: fp8`), as torchtitan does.

What runs in float8: the matmuls of every linear layer inside the blocks (qkv, proj, up, gate, down). Their
inputs, weights and output gradients are cast to float8 with dynamic scales (`train.fp8_recipe`: one scale per
tensor, or per row as torchao's "rowwise" recipe) right before each matmul; the weights themselves, the
optimizer's master copy and the checkpoints stay bf16/fp32, so an fp8 run saves, resumes and exports like any
other. What stays bf16: the embeddings and the LM head (the output projection is the most precision-sensitive
matmul, torchtitan and torchao keep it in high precision too), norms, attention's softmax, and the loss.

ZeRO-3: the swap happens after `deepspeed.zero.Init` built the partitioned model and before
`deepspeed.initialize` puts its hooks on the modules. `Float8Linear.from_float` keeps the very parameter
objects of the layer it replaces, so DeepSpeed's partitioned parameters (and their ds_* attributes) carry over
and its fetch/release hooks land on the new modules. Activation checkpointing recomputes the block, fp8 casts
included, from the same bf16 weights, so the recomputation is exact.

Hardware: float8 matmuls need compute capability >= 8.9 (Ada, Hopper). Elsewhere (a CPU, an A100) the run is
refused unless `train.fp8_emulate: true`, which runs torchao's emulation: the same casts and scales, the matmul
in high precision. That is how the CPU tests run it; it measures numerics, not speed.
"""

from __future__ import annotations

import logging

import torch

from pretrain.errors import ConfigError

FP8_MIN_CAPABILITY = (8, 9)  # torch._scaled_mm: Ada (8.9) and Hopper (9.0) and later
FP8_DIM_MULTIPLE = 16  # float8 GEMMs need both matmul dimensions divisible by 16
HIGH_PRECISION_MODULES = ("wte", "wpe", "lm_head")  # embeddings and the LM head never go to float8


def fp8_matmul_support(device_type: str) -> str | None:
    """None when this machine has float8 matmuls; else the reason it has none."""
    if device_type != "cuda":
        return f"the {device_type} accelerator has no float8 matmuls"
    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        name = torch.cuda.get_device_name()
        return f"{name} (compute capability {capability[0]}.{capability[1]}) has no float8 matmuls (needs >= 8.9)"
    return None


def check_fp8_hardware(emulate: bool, device_type: str) -> None:
    """Refuse `train.precision: fp8` on hardware without float8 matmuls unless the emulated path was asked for."""
    reason = None if emulate else fp8_matmul_support(device_type)
    if reason:
        raise ConfigError(
            f"train.precision: fp8: {reason}; set train.fp8_emulate: true to run torchao's emulated float8 "
            "(same numerics, no speed-up), or train.precision: bf16"
        )


def converts_to_fp8(module: torch.nn.Module, fqn: str) -> bool:
    """The linear layers that train in float8: inside a transformer block, with float8-GEMM-friendly shapes.

    Shapes come from `ds_shape` under ZeRO-3 (the local weight is a flat partition there).
    """
    if not isinstance(module, torch.nn.Linear) or not fqn.startswith("blocks."):
        return False
    out_features, in_features = getattr(module.weight, "ds_shape", module.weight.shape)
    return in_features % FP8_DIM_MULTIPLE == 0 and out_features % FP8_DIM_MULTIPLE == 0


def float8_config(recipe: str, emulate: bool):  # -> torchao.float8.Float8LinearConfig
    """torchao's recipe ("tensorwise" or "rowwise"), emulated on request."""
    import dataclasses

    from torchao.float8 import Float8LinearConfig

    return dataclasses.replace(Float8LinearConfig.from_recipe_name(recipe), emulate=emulate)


def convert_to_fp8(model: torch.nn.Module, recipe: str, emulate: bool) -> None:
    """Swap the block linears of `model` (a pretrain.model.GPT) for torchao Float8Linear, in place."""
    for noisy in ("torchao", "torch.utils._pytree"):  # optional CUDA kernels missing, a deprecation: on every import
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from torchao.float8 import convert_to_float8_training

    convert_to_float8_training(model, module_filter_fn=converts_to_fp8, config=float8_config(recipe, emulate))


def fp8_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules that compute in float8 (what a test checks the high-precision layers against)."""
    from torchao.float8.float8_linear import Float8Linear

    return [fqn for fqn, module in model.named_modules() if isinstance(module, Float8Linear)]


def fp8_summary(model: torch.nn.Module) -> str:
    """The line the trainer logs: which layers compute in float8 and which stay in high precision."""
    fp8 = fp8_module_names(model)
    kept = [name for name in HIGH_PRECISION_MODULES if hasattr(model, name)]
    return f"fp8: {len(fp8)} linear layers compute in float8 ({', '.join(fp8)}); high precision: {', '.join(kept)}"
