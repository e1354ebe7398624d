"""Export: SentencePiece -> HF tokenizer parity, ZeRO-3 consolidation (ours and DeepSpeed's own script agree),
refusal of incomplete checkpoints, and the Hugging Face folder loaded by transformers with matching logits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.documents import ROUND_TRIP_TEXTS
from support.runs import trained_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["debug", "llama-debug"])
def exported(request, tmp_path_factory, tiny_dataset) -> tuple[Path, Path]:
    """(run folder, HF folder written by the `pretrain export` console command)."""
    run_dir = trained_run(tmp_path_factory, tiny_dataset, request.param)
    out = tmp_path_factory.mktemp(f"hf-{request.param}")
    cmd = [sys.executable, "-m", "pretrain.cli", "export", str(run_dir), str(out), "--format", "hf"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(str(out))
    return run_dir, out


@pytest.mark.slow
@torch.no_grad()
def test_transformers_loads_export_with_matching_logits(exported) -> None:
    from transformers import AutoModelForCausalLM

    from pretrain.interop.consolidated import inference_model, load_consolidated

    run_dir, out = exported
    ours = inference_model(load_consolidated(run_dir))
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    family = "LlamaForCausalLM" if ours.cfg.pos_emb == "rope" else "GPT2LMHeadModel"
    assert type(hf).__name__ == family
    tokens = torch.randint(0, ours.cfg.vocab_size, (2, ours.cfg.seq_len), generator=torch.Generator().manual_seed(0))
    want, _ = ours(tokens)
    got = hf(tokens).logits[..., : ours.cfg.vocab_size]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert want.std() > 0.01  # trained weights, not an all-zero head that would match trivially


@pytest.mark.slow
def test_exported_tokenizer_encodes_like_the_run_tokenizer(exported, tiny_dataset) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    _, out = exported
    sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset / "tokenizer" / "spm.model"))
    hf = AutoTokenizer.from_pretrained(out)
    texts = [
        *ROUND_TRIP_TEXTS,
        "The model learns the data. Gradient norm over the layer head.",
        "river  stone\n\tcloud",
    ]
    assert [hf.encode(t, add_special_tokens=False) for t in texts] == [sp.encode(t) for t in texts]
    assert hf.eos_token_id == sp.eos_id()
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == sp.eos_id()


@pytest.mark.slow
def test_deepspeed_zero_to_fp32_script_agrees_with_our_consolidation(exported, tmp_path) -> None:
    from pretrain.checkpoint import resolve_checkpoint
    from pretrain.interop.consolidated import load_consolidated

    run_dir, _ = exported
    found = resolve_checkpoint(run_dir)
    root, tag = found.folder, found.tag
    script = root / "zero_to_fp32.py"  # placed there by engine.save_checkpoint
    # pickle output: the script's --safe_serialization refuses the tied embedding/head (shared memory)
    cmd = [sys.executable, str(script), str(root), str(tmp_path), "--tag", tag]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = {}
    for part in sorted(tmp_path.glob("*.bin")):
        theirs.update(torch.load(part, map_location="cpu", weights_only=True))
    assert theirs, f"zero_to_fp32.py wrote no weights: {sorted(p.name for p in tmp_path.iterdir())}"
    ours = load_consolidated(run_dir).state_dict
    shared = set(ours) & set(theirs)
    assert shared >= {k for k in ours if k != "lm_head.weight"}  # a tied head may be stored once
    for key in shared:
        assert torch.equal(ours[key], theirs[key].float()), key


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no COMPLETE marker", "checkpoint has no COMPLETE marker (interrupted save)"),
        ("a rank's optimizer partition missing", "optim_states.pt: listed in MANIFEST.sha256.json but missing"),
    ],
)
def test_export_refuses_an_incomplete_checkpoint(exported, tmp_path, damage: str, message: str, capsys) -> None:
    from pretrain import cli
    from pretrain.checkpoint import resolve_checkpoint

    run_dir, _ = exported
    found = resolve_checkpoint(run_dir)
    root, tag = found.folder, found.tag
    copy = tmp_path / "run"
    shutil.copytree(root / tag, copy / "checkpoints" / tag)
    shutil.copy(run_dir / "config.yaml", copy / "config.yaml")
    if damage == "no COMPLETE marker":
        (copy / "checkpoints" / tag / "COMPLETE").unlink()
    else:
        next((copy / "checkpoints" / tag).glob("zero_pp_rank_1_*optim_states.pt")).unlink()
    assert cli.main(["export", str(copy / "checkpoints" / tag), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert tag in err and message in err, err
    assert not (tmp_path / "hf").exists()
