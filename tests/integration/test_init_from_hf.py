"""Continued pretraining from a Hugging Face folder: a 2-rank ZeRO-3 run is exported, a new run starts from the
export with `--init-from-hf`, and the engine holds the same function (logits) and the same fp32 weights as the
source run, in fp32 and in bf16; the new run's first losses are the source model's, and it trains on.

The source runs and exports are test_export.py's (one per preset, shared through the session's base temp folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from support.launch import PYTHON, ROOT, free_port, run_train
from support.runs import SOURCE_SETS, export_of

pytestmark = pytest.mark.slow

PRESETS = ("debug", "llama-debug")  # GPT-2 (tied, learned positions) and Llama (RoPE, GQA n_kv_head=2, untied)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_dataset) -> dict[str, tuple[Path, Path]]:
    return {preset: export_of(tmp_path_factory, tiny_dataset, preset) for preset in PRESETS}


def hf_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(tokens).logits


def source_model(run_dir: Path):
    """The source run's newest checkpoint, consolidated to fp32, as our GPT (what `pretrain evaluate` serves)."""
    from pretrain.interop.consolidated import inference_model, load_consolidated

    consolidated = load_consolidated(run_dir)
    return inference_model(consolidated), consolidated.state_dict


# --------------------------------------------------------------------------- the engine holds the folder


@pytest.fixture(scope="module")
def engine_contents(exports, tiny_dataset, tmp_path_factory) -> dict:
    """tests/support/init_from_hf_engine.py on 2 ranks over both exports, fp32 and bf16."""
    out = tmp_path_factory.mktemp("init-engine") / "engine.pt"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += [str(ROOT / "tests" / "support" / "init_from_hf_engine.py"), str(tiny_dataset), str(out)]
    cmd += [str(exports[p][1]) for p in PRESETS]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("preset", PRESETS)
def test_engine_from_export_has_the_source_logits_and_fp32_weights(engine_contents, exports, preset) -> None:
    run_dir, folder = exports[preset]
    model, source_state = source_model(run_dir)
    for precision in ("fp32", "bf16"):
        got = engine_contents[f"{folder.name}/{precision}"]
        assert got["dtypes"] == (["torch.float32"] if precision == "fp32" else ["torch.bfloat16"])
        # the optimizer's fp32 master is the source run's fp32 weights exactly, in bf16 too (not bf16-rounded)
        for name, master in got["masters"].items():
            want = source_state[name]
            assert torch.equal(master[: want.shape[0]], want), f"{precision} {name}"
            assert not master[want.shape[0] :].any(), f"{precision} {name}: padded rows 256..288 must be zero"
        with torch.no_grad():
            ours = model(got["tokens"])[0]
        theirs = hf_logits(folder, got["tokens"])
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)  # the export is the source model
        if precision == "fp32":
            torch.testing.assert_close(got["logits"], ours, atol=1e-5, rtol=1e-5)
        else:  # the same weights rounded to bf16 and run in bf16: the source model's bf16 forward
            bf16 = model.to(torch.bfloat16)
            with torch.no_grad():
                rounded = bf16(got["tokens"])[0].float()
            model.float()
            ulp = 2.0**-7 * max(1.0, rounded.abs().max().item())  # bf16's spacing at the largest logit
            torch.testing.assert_close(got["logits"], rounded, atol=2 * ulp, rtol=0.0)  # ZeRO-3's linear sums anew
            assert (got["logits"] - ours).abs().max() < 0.05 * ours.std()  # measured 0.026 std: bf16, not wrong
        assert ours.std() > 0.01  # trained weights, not an all-zero head that would match trivially


# --------------------------------------------------------------------------- a run that continues the export


def mean_loss(folder: Path, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The exported model's mean token cross-entropy over equal-sized batches, in transformers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for x, y in batches:
            logits = model(x).logits
            losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)


def first_batches(data: Path, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What the trainer computes its first losses on (2 ranks, micro batch 2, seq 32, data.seed 1234): the step-1
    batch of each rank (train), or the 8 validation windows in micro batches of 2 (validation)."""
    from data_pipeline.shards import TokenStream
    from pretrain.data import BatchLayout, TrainSampler, validation_batches, validation_indices

    stream = TokenStream(data, split)
    if split == "train":
        return [TrainSampler(stream, 32, 1234, BatchLayout(2, 2, 1), rank).micro_batch(0) for rank in (0, 1)]
    indices = validation_indices(stream, 32, 8)
    return [(x, y) for x, y, _ in validation_batches(stream, 32, indices, 2, rank=0, world_size=1)]


def metric(run_dir: Path, step: int, name: str) -> float:
    from pretrain.metrics import read_metrics

    values = [r[name] for r in read_metrics(run_dir) if r["step"] == step and name in r]
    assert values, f"no {name} at step {step} in {run_dir / 'metrics.csv'}"
    return values[-1]


@pytest.fixture(scope="module")
def continued(exports, tiny_dataset, tmp_path_factory) -> tuple[Path, Path, str]:
    """llama-debug's export continued for 6 steps on 2 ranks under the real engine: (run, folder, stdout)."""
    _, folder = exports["llama-debug"]
    run_dir = tmp_path_factory.mktemp("continued") / "run"
    sets = (*SOURCE_SETS, "train.max_steps=6", "train.save_interval=6", "optim.lr=3e-3")
    proc = run_train(2, tiny_dataset, run_dir, sets, extra=("--preset", "llama-debug", "--init-from-hf", str(folder)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, folder, proc.stdout


def test_continued_run_starts_at_the_exported_models_losses_and_trains_on(continued, tiny_dataset) -> None:
    run_dir, folder, stdout = continued
    assert f"initialized from the Hugging Face folder {folder.resolve()}" in stdout
    assert "tokenizer: sha256" in stdout  # the export's sentencepiece.model is the dataset's
    val_start = metric(run_dir, 0, "val_loss")  # the engine before any update, on the 8 validation windows
    assert val_start == pytest.approx(mean_loss(folder, first_batches(tiny_dataset, "validation")), rel=1e-6)
    first = metric(run_dir, 1, "loss")  # step 1's loss is computed before its update
    assert first == pytest.approx(mean_loss(folder, first_batches(tiny_dataset, "train")), rel=1e-6)
    assert metric(run_dir, 6, "val_loss") < val_start - 0.05, "the continued run did not learn"


def test_run_folder_records_the_start_and_a_relaunch_resumes_its_own_checkpoint(continued, tiny_dataset) -> None:
    import yaml

    run_dir, folder, _ = continued
    record = yaml.safe_load((run_dir / "launches" / "001.yaml").read_text())["init_from_hf"]
    assert record["path"] == str(folder.resolve()) and set(record["weights"]) == {"model.safetensors"}
    client = json.loads((run_dir / "checkpoints" / "step00000006" / "client_state.json").read_text())
    assert client["init_from_hf"] == record
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert (saved["n_kv_head"], saved["pos_emb"], saved["tie_embeddings"]) == (2, "rope", False)
    sets = (*SOURCE_SETS, "train.max_steps=7", "train.save_interval=6", "optim.lr=3e-3")
    proc = run_train(2, tiny_dataset, run_dir, sets, extra=("--preset", "llama-debug", "--init-from-hf", str(folder)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"resumed from \S+step00000006: step 6", proc.stdout), proc.stdout[-2000:]
    assert "initialized from the Hugging Face folder" not in proc.stdout  # the checkpoint, not the folder
    assert yaml.safe_load((run_dir / "launches" / "002.yaml").read_text())["init_from_hf"] is None


def test_relaunch_from_another_folder_is_refused(continued, exports, tiny_dataset) -> None:
    import yaml

    from data_pipeline.shards import read_manifest
    from pretrain import run_folder
    from pretrain.interop.hf_init import start_record

    run_dir, folder, _ = continued
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    other = start_record(exports["debug"][1])
    with pytest.raises(run_folder.RunFolderError) as err:
        run_folder.check_launch(run_dir, config, read_manifest(tiny_dataset), "auto", other)
    message = str(err.value)
    assert f"--init-from-hf {other['path']}: the checkpoints started from --init-from-hf {folder.resolve()}" in message
    assert run_folder.check_launch(run_dir, config, read_manifest(tiny_dataset), "auto", start_record(folder))


# --------------------------------------------------------------------------- refusals before anything starts


def run_config_for(folder: Path, data: Path, *extra: str):
    """pretrain.train's run config for `--init-from-hf folder` (what every rank builds before the launch)."""
    from data_pipeline.shards import read_manifest
    from pretrain.resolve import build_run_config
    from pretrain.train import parse_args

    argv = ["--data", str(data), "--output", "unused", "--preset", "debug", "--init-from-hf", str(folder), *extra]
    return build_run_config(parse_args(argv), read_manifest(data), "cpu")


def test_the_folder_decides_the_model_and_conflicting_settings_are_named(exports, tiny_dataset) -> None:
    from pretrain.config import ConfigError

    _, folder = exports["llama-debug"]
    cfg = run_config_for(folder, tiny_dataset, "--set", "model.seq_len=32", "--set", "model.dropout=0.1")
    assert (cfg.model.pos_emb, cfg.model.n_kv_head, cfg.model.seq_len, cfg.model.dropout) == ("rope", 2, 32, 0.1)
    assert cfg.preset == "debug" and cfg.optim.lr == 1e-3  # the preset's recipe, the folder's model
    with pytest.raises(ConfigError) as err:
        run_config_for(folder, tiny_dataset, "--set", "model.n_layer=3", "--set", "model.mlp=gelu")
    assert "model.mlp='gelu' (the folder has 'swiglu'), model.n_layer=3 (the folder has 2)" in str(err.value)


def test_a_folder_with_another_tokenizer_is_refused(exports, tiny_dataset, tmp_path) -> None:
    from pretrain.config import ConfigError

    _, folder = exports["debug"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "sentencepiece.model").write_bytes(b"another tokenizer")
    with pytest.raises(ConfigError, match=r"sentencepiece\.model \(sha256 \w+…\) is not the tokenizer of the dataset"):
        run_config_for(copy, tiny_dataset)
    (copy / "sentencepiece.model").unlink()  # a folder with only tokenizer.json: compared piece by piece
    assert run_config_for(copy, tiny_dataset).model.vocab_size == 256
    vocab = json.loads((copy / "tokenizer.json").read_text())
    swap = {5: 7, 7: 5}  # two ordinary pieces trade ids
    vocab["model"]["vocab"] = {piece: swap.get(i, i) for piece, i in vocab["model"]["vocab"].items()}
    (copy / "tokenizer.json").write_text(json.dumps(vocab))
    with pytest.raises(ConfigError, match=r"tokenizer\.json gives .* id 7, the dataset's tokenizer .* id 5"):
        run_config_for(copy, tiny_dataset)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    with pytest.raises(ConfigError, match=r"its vocabulary has 300 tokens \(config\.json\), the dataset"):
        run_config_for(copy, tiny_dataset)
