"""`tokenizer.from`: tokenizing with an existing tokenizer (a Hugging Face tokenizer.json or a SentencePiece
.model) instead of training one: the ids are the tokenizer's own, EOS is appended, the manifest records the file.
Also: the model's vocabulary padding leaves real-token logits unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.documents import stdlib_docs, write_kept
from tokenizers import Tokenizer
from tokenizers.implementations import ByteLevelBPETokenizer, SentencePieceBPETokenizer

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.shards import TokenStream, read_manifest
from data_pipeline.stages.tokenize import is_validation, run_tokenize_stage
from data_pipeline.tokenizer import TokenizerError, adopt_tokenizer, load_tokenizer, train_tokenizer
from pretrain.config import ModelConfig
from pretrain.model import GPT

TEXTS = [*stdlib_docs(60), "def f(x):\n\treturn x  # tabs, ünïcode, 数字 123456 </s> <|endoftext|>"]


def gpt2_folder(folder: Path) -> Path:
    """A GPT-2-shaped tokenizer: byte-level BPE with <|endoftext|> (no tokenizer_config.json: found by name)."""
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(TEXTS, vocab_size=400, special_tokens=["<|endoftext|>"])
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def llama_folder(folder: Path) -> Path:
    """A Llama-shaped tokenizer: SentencePiece-style BPE (▁ spaces, byte fallback off) with <unk> <s> </s>."""
    tokenizer = SentencePieceBPETokenizer()
    tokenizer.train_from_iterator(TEXTS, vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"])
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("make, eos", [(gpt2_folder, "<|endoftext|>"), (llama_folder, "</s>")])
def test_hf_tokenizer_ids_are_the_tokenizers_librarys_and_eos_its_own(tmp_path, make, eos) -> None:
    folder = make(tmp_path / "hf")
    info = adopt_tokenizer(folder, tmp_path / "data")
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert info["eos_id"] == reference.token_to_id(eos)
    assert info["vocab_size"] == reference.get_vocab_size(with_added_tokens=True)
    assert info["sha256"] == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    assert info["source"] == str((folder / "tokenizer.json").resolve())
    processor, loaded = load_tokenizer(tmp_path / "data")
    assert loaded == info
    got = processor.encode(TEXTS)
    assert got == [reference.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert processor.decode(got[-1]) == TEXTS[-1]  # byte-level and ▁ spaces both round-trip this text


def test_llama_special_ids_come_from_tokenizer_config(tmp_path) -> None:
    info = adopt_tokenizer(llama_folder(tmp_path / "hf"), tmp_path / "data")
    assert (info["unk_id"], info["bos_id"], info["eos_id"], info["pad_id"]) == (0, 1, 2, -1)


def test_a_datasets_sentencepiece_folder_is_adopted_byte_for_byte(tmp_path) -> None:
    corpus = write_kept(tmp_path / "corpus", TEXTS, parts=1)
    trained = train_tokenizer(
        [corpus / "kept" / "part-00000.jsonl"],
        tmp_path / "first",
        load_recipe(None, ["tokenizer.vocab_size=700"]).tokenizer,
    )
    info = adopt_tokenizer(tmp_path / "first" / "tokenizer", tmp_path / "second")
    assert info["sha256"] == trained["sha256"]  # what a mixture and --init-from-hf compare
    assert {k: info[k] for k in ("vocab_size", "eos_id", "bos_id", "unk_id")} == {
        k: trained[k] for k in ("vocab_size", "eos_id", "bos_id", "unk_id")
    }
    first, _ = load_tokenizer(tmp_path / "first")
    second, _ = load_tokenizer(tmp_path / "second")
    assert second.encode(TEXTS) == first.encode(TEXTS)


def test_a_folder_without_a_tokenizer_is_refused_with_the_fix(tmp_path) -> None:
    with pytest.raises(TokenizerError, match=r"neither a SentencePiece \*.model nor a Hugging Face tokenizer.json"):
        adopt_tokenizer(tmp_path, tmp_path / "data")


def test_tokenizer_from_key_in_set_and_yaml(tmp_path) -> None:
    assert load_recipe(None, ["tokenizer.from=/models/gpt2"]).tokenizer.from_dir == "/models/gpt2"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tokenizer:\n  from: /models/llama\n")
    assert load_recipe(recipe).tokenizer.from_dir == "/models/llama"


def test_stage_with_tokenizer_from_writes_the_tokenizers_ids_eos_and_the_manifest_record(tmp_path) -> None:
    folder = gpt2_folder(tmp_path / "hf")
    out = write_kept(tmp_path / "run", TEXTS, parts=2)
    sets = [f"tokenizer.from={folder}", "shards.validation_fraction=0.2"]
    run_tokenize_stage(LocalComm(), out, load_recipe(None, sets), quiet=True)
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos = reference.token_to_id("<|endoftext|>")
    streams = {"train": [], "validation": []}
    for i, text in enumerate(TEXTS):
        split = "validation" if is_validation(f"doc-{i:06d}", 0.2) else "train"
        streams[split] += [*reference.encode(text, add_special_tokens=False).ids, eos]
    for split, expected in streams.items():
        stream = TokenStream(out, split)
        np.testing.assert_array_equal(stream.window(0, stream.num_tokens), expected)
    manifest = read_manifest(out)
    assert manifest["vocab_size"] == reference.get_vocab_size() and manifest["eos_id"] == eos
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    assert manifest["tokenizer"]["source"] == str((folder / "tokenizer.json").resolve())


def test_vocab_padding_keeps_real_token_logits_and_never_predicts_a_padded_id() -> None:
    """Padding to 128 instead of 1 adds zero-initialised rows that are sliced off: the same function."""
    cfg = dict(vocab_size=300, seq_len=16, n_layer=1, n_head=2, d_model=32, tie_embeddings=False)
    torch.manual_seed(0)
    exact = GPT(ModelConfig(**cfg, pad_vocab_multiple=1)).eval()
    padded = GPT(ModelConfig(**cfg, pad_vocab_multiple=128)).eval()
    assert padded.lm_head.weight.shape[0] == 384
    with torch.no_grad():
        for name, param in padded.named_parameters():
            source = exact.state_dict()[name]
            param.zero_()
            param[: source.shape[0]] = source
    idx = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        want, got = exact(idx)[0], padded(idx)[0]
    assert got.shape[-1] == 300  # padded ids are not in the logits, so neither sampling nor the loss can pick one
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_init_from_hf_accepts_the_folder_the_dataset_was_tokenized_with_and_refuses_another(tmp_path) -> None:
    from pretrain.errors import ConfigError
    from pretrain.interop.hf_init import check_tokenizer

    folder = gpt2_folder(tmp_path / "hf")
    info = adopt_tokenizer(folder, tmp_path / "data")
    manifest = {"vocab_size": info["vocab_size"], "tokenizer": info}
    assert check_tokenizer(folder, info["vocab_size"], manifest, tmp_path / "data").endswith("equal")
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text() + "\n")  # another file
    with pytest.raises(ConfigError, match="is not the tokenizer of the dataset .*tokenizer.from="):
        check_tokenizer(folder, info["vocab_size"], manifest, tmp_path / "data")
