"""`pretrain generate RUN_OR_CKPT --prompt TEXT`: sample a continuation from a checkpoint on one device.

The ZeRO-3 partitions are consolidated to fp32 (pretrain/interop/consolidated.py), the model runs in bf16 on a GPU
and fp32 on CPU, and decoding uses the model's KV cache. The prompt is preceded by the EOS id because that is what
precedes every document in the training stream (documents are concatenated with EOS after each), so the model
sees the prompt the way it saw the start of a document. Sampling stops at EOS or after --max-new-tokens.
"""

from __future__ import annotations

import argparse

import torch

from pretrain.errors import UsageError
from pretrain.interop.consolidated import inference_model, load_consolidated, pick_device, run_tokenizer


def encode_prompt(processor, prompt: str, eos_id: int, seq_len: int) -> list[int]:
    """EOS (document boundary) + the prompt's tokens, cropped from the left to leave room for one new token."""
    ids = [eos_id, *processor.encode(prompt)]
    return ids[-(seq_len - 1) :]


def continuation(ids: list[int], prompt_len: int, eos_id: int) -> list[int]:
    """The generated part, up to (not including) the first EOS."""
    new = ids[prompt_len:]
    return new[: new.index(eos_id)] if eos_id in new else new


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    seed: int,
) -> list[int]:
    """Prompt + generated ids; the same seed, prompt and weights give the same tokens."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out = model.generate(idx, max_new_tokens, temperature, top_k, top_p, eos_id, generator)
    return out[0].tolist()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, its checkpoints/ folder, or one checkpoints/<tag> folder")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (argmax)")
    parser.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass >= p")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the first invalid sampling argument (UsageError) before minutes of checkpoint loading."""
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    consolidated = load_consolidated(args.checkpoint)
    tokenizer = run_tokenizer(consolidated.cfg)
    processor = tokenizer.encoder()
    device, dtype = pick_device(args.device)
    model = inference_model(consolidated, device).to(dtype)
    prompt_ids = encode_prompt(processor, args.prompt, tokenizer.eos_id, consolidated.cfg.model.seq_len)
    ids = sample(
        model,
        prompt_ids,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_id=tokenizer.eos_id,
        seed=args.seed,
    )
    print(args.prompt + processor.decode(continuation(ids, len(prompt_ids), tokenizer.eos_id)))
    return 0
