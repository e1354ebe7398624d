"""Continued pretraining from a Hugging Face folder on data tokenized with that folder's own tokenizer:
`pipeline run --set tokenizer.from=FOLDER`, then `--init-from-hf FOLDER` on 2 ranks; the run's first validation
loss is transformers' loss on the same tokens. One GPT-2-shaped folder (byte-level BPE) and one Llama-shaped
folder (SentencePiece-style BPE), tokenizers and weights made here.

Each model is trained briefly in transformers on the folder tokenizer's ids of the corpus, so its loss depends on
being fed those ids: data tokenized otherwise would not give the same loss (checked against the ids shifted by one).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from support.documents import stdlib_docs
from support.launch import PYTHON, ROOT, run_train
from support.runs import SOURCE_SETS
from test_init_from_hf import first_batches, mean_loss, metric
from tokenizers import Tokenizer
from tokenizers.implementations import ByteLevelBPETokenizer, SentencePieceBPETokenizer
from transformers import AutoTokenizer

from pretrain.interop.consolidated import load_consolidated, run_tokenizer
from pretrain.interop.export import export_hf

pytestmark = pytest.mark.slow

SEQ_LEN = 32  # first_batches' windows
TEXTS = stdlib_docs(120)


def gpt2_folder(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(TEXTS, vocab_size=384, special_tokens=["<|endoftext|>"])
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=SEQ_LEN, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=tokenizer.token_to_id("<|endoftext|>"), eos_token_id=tokenizer.token_to_id("<|endoftext|>"),
    )  # fmt: skip
    return _save(folder, GPT2LMHeadModel(config), tokenizer, {"eos_token": "<|endoftext|>"})


def llama_folder(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = SentencePieceBPETokenizer()
    tokenizer.train_from_iterator(TEXTS, vocab_size=448, special_tokens=["<unk>", "<s>", "</s>"])
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=SEQ_LEN, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return _save(folder, LlamaForCausalLM(config), tokenizer, specials)


def _save(folder: Path, model, tokenizer, specials: dict) -> Path:
    _fit(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(specials))
    return folder


def _fit(model, tokenizer, steps: int = 60) -> None:
    """A few Adam steps on the tokenizer's ids of the corpus: a model that has learned these ids."""
    ids = torch.tensor([i for text in TEXTS for i in tokenizer.encode(text).ids])
    windows = ids[: len(ids) // SEQ_LEN * SEQ_LEN].view(-1, SEQ_LEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        batch = windows[torch.randint(0, len(windows), (16,))]
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


FAMILIES = {"gpt2": (gpt2_folder, "debug"), "llama": (llama_folder, "llama-debug")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


@pytest.fixture(scope="module", params=list(FAMILIES))
def continued(request, corpus, tmp_path_factory) -> tuple[Path, Path, Path, str]:
    """(folder, dataset, run, stdout): the folder's tokenizer through `pipeline run`, then 1 step from it."""
    make, preset = FAMILIES[request.param]
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp(request.param)
    folder, data = make(tmp / "hf"), tmp / "data"
    cmd = [PYTHON, "-m", "data_pipeline.cli", "run", "--input", str(corpus), "--output", str(data), "--quiet"]
    for key in (f"tokenizer.from={folder}", "filters.enabled=false", "shards.validation_fraction=0.2"):
        cmd += ["--set", key]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sets = (*SOURCE_SETS, "train.max_steps=1", "train.save_interval=1", "data.val_samples=8")
    run = run_train(2, data, tmp / "run", sets, extra=("--preset", preset, "--init-from-hf", str(folder)))
    assert run.returncode == 0, run.stderr[-3000:]
    return folder, data, tmp / "run", run.stdout


def test_first_validation_loss_is_transformers_loss_on_the_folders_tokens(continued) -> None:
    folder, data, run_dir, stdout = continued
    assert "tokenizer: sha256" in stdout  # the dataset's tokenizer.json is the folder's, byte for byte
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["tokenizer"]["source"] == str((folder / "tokenizer.json").resolve())
    batches = first_batches(data, "validation")
    want = mean_loss(folder, batches)
    assert metric(run_dir, 0, "val_loss") == pytest.approx(want, rel=1e-6)  # test_init_from_hf.py's tolerance
    vocab = manifest["vocab_size"]
    shifted = mean_loss(folder, [((x + 1) % vocab, (y + 1) % vocab) for x, y in batches])
    assert shifted > want + 0.5, "the loss does not depend on the ids: the parity above would prove nothing"
    assert want < math.log(vocab) - 0.5  # the folder's model learned these ids (measured: gpt2 5.11, ln 384 = 5.95)


def test_export_and_generate_use_the_adopted_tokenizer(continued, tmp_path) -> None:
    """`pretrain export` writes the folder's tokenizer.json (not a SentencePiece conversion) and `generate`
    encodes with it: both read the dataset's tokenizer through RunTokenizer (in-process here)."""
    folder, _, run_dir, _ = continued
    theirs = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = TEXTS[3][:200]
    want = theirs.encode(text, add_special_tokens=False).ids
    exported = AutoTokenizer.from_pretrained(export_hf(run_dir, tmp_path / "hf"))
    assert exported.encode(text, add_special_tokens=False) == want
    eos = json.loads((folder / "tokenizer_config.json").read_text())["eos_token"]
    assert exported.eos_token == eos
    codec = run_tokenizer(load_consolidated(run_dir).cfg).encoder()
    assert codec.encode(text) == want and codec.decode(want) == theirs.decode(want, skip_special_tokens=False)
