"""SentencePiece training on the kept documents, or an existing tokenizer adopted as it is (`tokenizer.from`), and
the tokenizer the tokenize stage and the trainer load.

Choices that matter for users:

- Exact round trip. SentencePiece normalises with `nmt_nfkc` and collapses runs of spaces by default, so
  `decode(encode(text))` silently changes full-width digits, ligatures, compatibility characters and indentation
  (fatal for code). We train with `normalization_rule_name="identity"` and `remove_extra_whitespaces=False` so the
  model sees the text as written, and `byte_fallback=True` so a character never seen in training is spelled as
  UTF-8 byte pieces instead of `<unk>`: no document loses information.
- Bounded memory. Documents are streamed to the trainer as lines through `sentence_iterator`; SentencePiece
  keeps a uniform reservoir of `input_sentence_size` of them (`shuffle_input_sentence=True`), so RAM does not
  grow with the corpus and no giant temporary text file is written. Time is bounded too: past ~2 GB of kept
  text only a hashed share of the documents is parsed at all (`document_fraction`).
- Determinism. The sampling seed is set with `set_random_generator_seed`; the same input and recipe give the
  same `spm.model` bytes (tests/unit/test_tokenizer.py trains twice and compares). Measured: the trainer's result
  depends on its thread count (1 and 2 threads give different models), not on the cores present, so
  `num_threads=0` means a fixed TRAINER_THREADS rather than "all cores" -- a model does not change with the machine.
- Known limit: a literal U+2581 (the "▁" SentencePiece uses for a space) in a document decodes as a space;
  SentencePiece has no escape for it. Every other character round-trips exactly.
- Newlines and tabs are user-defined symbols: they are frequent in code and prose, and lines are the training
  sentences, so the trainer would otherwise never see them and spell each one as a byte piece.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sentencepiece as spm
import xxhash

from data_pipeline.config import TokenizerConfig
from data_pipeline.errors import PipelineError
from infra.files import atomic_write, write_bytes

TOKENIZER_DIR = "tokenizer"
MODEL_FILE = "spm.model"
VOCAB_FILE = "spm.vocab"
INFO_FILE = "tokenizer.json"
MAX_SENTENCE_BYTES = 16384
TRAINER_THREADS = 16
SAMPLE_MARGIN = 4  # parse documents for 4x the sentences the trainer keeps, so its reservoir still chooses
ASSUMED_LINE_BYTES = 500  # a long prose line; shorter real lines only make the parsed sample larger
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3}


class TokenizerError(PipelineError):
    """Training or loading the tokenizer failed; the message says which setting or file to change."""


def trainer_threads(num_threads: int) -> int:
    """Training threads: 0 means TRAINER_THREADS, fixed, because the trained model depends on the count."""
    return num_threads if num_threads > 0 else TRAINER_THREADS


def part_order(path: Path) -> tuple[int, str]:
    """Sort key of kept/ parts: by task number, which names part-NNNNN with at least 5 digits (past 100,000 tasks
    a longer number sorts before a shorter one by name); longer numbers are larger, equal lengths sort by name."""
    return len(path.name), path.name


def kept_files(path: str | os.PathLike) -> list[Path]:
    """The kept/ parts in task order (= global document order, `part_order`), or the single jsonl file given."""
    path = Path(path)
    if path.is_file():
        return [path]
    folder = path / "kept" if (path / "kept").is_dir() else path
    files = sorted(folder.glob("*.jsonl"), key=part_order)
    if not files:
        raise TokenizerError(f"{path}: no *.jsonl documents; pass a kept/ folder, a `pipeline dedup` output or a jsonl")
    return files


def document_fraction(files: list[Path], input_sentence_size: int) -> float:
    """The share of documents worth parsing: enough for SAMPLE_MARGIN x input_sentence_size long lines.

    SentencePiece keeps only input_sentence_size sentences; parsing a 1 TB corpus to feed its reservoir would
    make training I/O-bound for hours. Above that budget, documents are picked by a hash of their raw line
    (deterministic, independent of how the corpus is split into parts or ranks) before any JSON is parsed.
    """
    return sample_fraction(sum(os.path.getsize(p) for p in files), input_sentence_size)


def sample_fraction(total_bytes: int, input_sentence_size: int) -> float:
    """`document_fraction` of a corpus of total_bytes (the tokenize stage knows the sizes without a stat)."""
    budget = SAMPLE_MARGIN * input_sentence_size * ASSUMED_LINE_BYTES
    return 1.0 if total_bytes <= budget else budget / total_bytes


def iter_documents(
    files: list[Path], fraction: float = 1.0, fields: tuple[str, ...] = ("text",), optional: tuple[str, ...] = ()
) -> Iterator[tuple[dict, int]]:
    """`fields` of every document line (or of a hashed `fraction` of them), its `optional` fields (None where
    absent) and the line's size, in file order.

    A line that is not such a document raises TokenizerError naming its file and line.
    """
    cutoff = fraction * 2.0**64
    for path in files:
        with open(path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if fraction < 1.0 and xxhash.xxh64_intdigest(line) >= cutoff:
                    continue
                try:
                    doc = json.loads(line)
                    doc = {k: doc[k] for k in fields} | {k: doc.get(k) for k in optional}
                except (ValueError, KeyError, TypeError) as err:
                    names = " and ".join(repr(k) for k in fields)
                    raise TokenizerError(f"{path}:{line_no}: not a document line with {names} ({err})") from err
                yield doc, len(line)


def training_sentences(files: list[Path], fraction: float = 1.0) -> Iterator[str]:
    """Non-empty lines of the documents, cut to the trainer's sentence limit so none is silently skipped."""
    for doc, _ in iter_documents(files, fraction):
        for line in doc["text"].split("\n"):
            if line.strip():
                yield line.encode("utf-8")[:MAX_SENTENCE_BYTES].decode("utf-8", "ignore")


def trainer_options(settings: TokenizerConfig) -> dict:
    """The SentencePieceTrainer arguments for a recipe (see the module docstring for the why)."""
    return dict(
        vocab_size=settings.vocab_size,
        model_type=settings.model_type,
        input_sentence_size=settings.input_sentence_size,
        shuffle_input_sentence=True,
        character_coverage=settings.character_coverage,
        byte_fallback=settings.byte_fallback,
        split_digits=settings.split_digits,
        num_threads=trainer_threads(settings.num_threads),
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        user_defined_symbols=["\n", "\t"],
        allow_whitespace_only_pieces=True,
        max_sentence_length=MAX_SENTENCE_BYTES,
        hard_vocab_limit=True,
        train_extremely_large_corpus=False,
        minloglevel=2,
        **SPECIAL_IDS,
    )


def sample_documents(files: list[Path], fraction: float, sample_dir: Path) -> list[Path]:
    """Write the document lines of each file that the hashed `fraction` picks to sample_dir/<file name>.

    The same pick as `iter_documents(files, fraction)`, so training on the samples with fraction 1 sees the
    same documents in the same order. Ranks each sample their share of kept/ in parallel (stages/tokenize.py).
    """
    sample_dir.mkdir(parents=True, exist_ok=True)
    cutoff, written = fraction * 2.0**64, []
    for path in files:
        target = sample_dir / path.name
        with open(path, "rb") as source, atomic_write(target, "wb") as sample:
            for line in source:
                if xxhash.xxh64_intdigest(line) < cutoff:
                    sample.write(line)
        written.append(target)
    return written


def train_tokenizer(
    inputs: list[Path], output_dir: str | os.PathLike, settings: TokenizerConfig, fraction: float | None = None
) -> dict:
    """Train on the documents in `inputs`; write DIR/tokenizer/{spm.model,spm.vocab,tokenizer.json}; return the info.

    `fraction` is the share of documents to parse (default: `document_fraction`; 1.0 for already sampled inputs).
    """
    out = Path(output_dir) / TOKENIZER_DIR
    out.mkdir(parents=True, exist_ok=True)
    spm.set_random_generator_seed(settings.seed)
    model = _train_model_bytes(inputs, settings, fraction)
    write_bytes(out / MODEL_FILE, model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i)}\n" for i in range(processor.vocab_size()))
    write_bytes(out / VOCAB_FILE, vocab.encode("utf-8"))
    info = tokenizer_info(processor, hashlib.sha256(model).hexdigest(), settings)
    write_bytes(out / INFO_FILE, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return info


def _train_model_bytes(inputs: list[Path], settings: TokenizerConfig, fraction: float | None) -> bytes:
    import io

    model, reading_errors = io.BytesIO(), []
    if fraction is None:
        fraction = document_fraction(inputs, settings.input_sentence_size)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_recording(training_sentences(inputs, fraction), reading_errors),
            model_writer=model,
            **trainer_options(settings),
        )
    except RuntimeError as err:
        if reading_errors:  # a bad input line: report it as itself, not wrapped in sentencepiece's message
            raise reading_errors[0] from err
        raise TokenizerError(_explain_training_error(err, settings)) from err
    return model.getvalue()


def _recording(sentences: Iterator[str], errors: list[Exception]) -> Iterator[str]:
    try:
        yield from sentences
    except Exception as err:
        errors.append(err)
        raise


def _explain_training_error(err: RuntimeError, settings: TokenizerConfig) -> str:
    """Turn sentencepiece's internal check failures into the setting to change."""
    import re

    message = str(err).strip()
    if "Vocabulary size too high" in message:
        limit = re.search(r"<= (\d+)", message)
        suggestion = limit.group(1) if limit else "N"
        return (
            f"the corpus is too small for tokenizer.vocab_size={settings.vocab_size} (sentencepiece: at most "
            f"{suggestion}); pass `--set tokenizer.vocab_size={suggestion}` or smaller, or train on more text"
        )
    if "sentences_.empty()" in message:
        return "no text to train on: the kept documents are empty (were all documents dropped? see stats.json)"
    if "required_chars" in message:
        return f"tokenizer.vocab_size={settings.vocab_size} is below the number of characters to cover: {message}"
    return f"sentencepiece training failed: {message}"


def tokenizer_info(processor: spm.SentencePieceProcessor, sha256: str, settings: TokenizerConfig) -> dict:
    """What the manifest and the trainer need to know about the tokenizer."""
    return {
        "path": f"{TOKENIZER_DIR}/{MODEL_FILE}",
        "sha256": sha256,
        "vocab_size": processor.vocab_size(),
        "unk_id": processor.unk_id(),
        "bos_id": processor.bos_id(),
        "eos_id": processor.eos_id(),
        "pad_id": processor.pad_id(),
        "model_type": settings.model_type,
        "settings": dataclasses.asdict(settings),
    }


def load_tokenizer(data_dir: str | os.PathLike) -> tuple[spm.SentencePieceProcessor | HFTokenizer, dict]:
    """The dataset's tokenizer and its info, after checking the model bytes against the recorded sha256."""
    folder = Path(data_dir) / TOKENIZER_DIR
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise TokenizerError(f"{folder}: no tokenizer; run `pipeline train-tokenizer` or `pipeline run` first")
    info = json.loads(info_path.read_text())
    model_path = Path(data_dir) / info["path"]
    if not model_path.is_file():
        raise TokenizerError(f"{model_path}: missing (named by {info_path}); run `pipeline run` again")
    model = model_path.read_bytes()
    if hashlib.sha256(model).hexdigest() != info["sha256"]:
        raise TokenizerError(f"{model_path}: sha256 differs from {info_path}; retrain the tokenizer")
    if model_path.name == HF_FILE:
        return HFTokenizer(model.decode("utf-8")), info
    return spm.SentencePieceProcessor(model_proto=model), info


# --- an existing tokenizer (`tokenizer.from`) ---------------------------------------------------------------

HF_FILE = "hf_tokenizer.json"  # a Hugging Face tokenizer.json, renamed: tokenizer/tokenizer.json is INFO_FILE
EOS_NAMES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")  # Llama/T5, GPT-2, Llama 3, Gemma


class HFTokenizer:
    """A Hugging Face tokenizer.json through the `tokenizers` library, with the two calls the pipeline makes of a
    SentencePieceProcessor (`encode` of a batch, `decode`). No special tokens are added: the shards append EOS."""

    def __init__(self, json_text: str) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(json_text)

    def encode(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Ids of each text; `tokenizers` sizes its own thread pool (RAYON_NUM_THREADS), so num_threads is unused."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def adopt_tokenizer(source_dir: str | os.PathLike, output_dir: str | os.PathLike) -> dict:
    """Copy an existing tokenizer into DIR/tokenizer/ and write its info (INFO_FILE); return the info.

    A folder with one SentencePiece `*.model` (another dataset's tokenizer/, Llama's tokenizer.model) is used as
    SentencePiece, so the dataset's files are the same as a trained one's; otherwise its `tokenizer.json` (GPT-2's
    byte-level BPE, Llama's) through the `tokenizers` library. Vocabulary size, special ids and EOS are the
    tokenizer's own; the info records the sha256 of the copied file and where it came from.
    """
    source = Path(source_dir).resolve()
    out = Path(output_dir) / TOKENIZER_DIR
    out.mkdir(parents=True, exist_ok=True)
    models = sorted(source.glob("*.model"))
    if len(models) > 1:
        names = ", ".join(p.name for p in models)
        raise TokenizerError(f"tokenizer.from={source}: several SentencePiece models ({names}); keep one there")
    if models:
        model = models[0].read_bytes()
        info = _spm_info(spm.SentencePieceProcessor(model_proto=model), f"{TOKENIZER_DIR}/{MODEL_FILE}", models[0])
    elif hf_file := next((source / n for n in (HF_FILE, "tokenizer.json") if (source / n).is_file()), None):
        model = hf_file.read_bytes()  # HF_FILE first: in another dataset's tokenizer/, tokenizer.json is INFO_FILE
        info = _hf_info(HFTokenizer(model.decode("utf-8")), source, hf_file)
    else:
        raise TokenizerError(
            f"tokenizer.from={source}: neither a SentencePiece *.model nor a Hugging Face tokenizer.json there; "
            "point it at a tokenizer folder (a dataset's tokenizer/, or a model folder from the Hub)"
        )
    write_bytes(Path(output_dir) / info["path"], model)
    info["sha256"] = hashlib.sha256(model).hexdigest()
    write_bytes(out / INFO_FILE, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return info


def _spm_info(processor: spm.SentencePieceProcessor, path: str, source: Path) -> dict:
    if processor.eos_id() < 0:
        raise TokenizerError(f"tokenizer.from: {source} has no EOS piece (eos_id -1); documents need an end marker")
    ids = {f"{k}_id": getattr(processor, f"{k}_id")() for k in ("unk", "bos", "eos", "pad")}
    return {"path": path, "vocab_size": processor.vocab_size(), **ids, "source": str(source)}


def _hf_info(tokenizer: HFTokenizer, source: Path, hf_file: Path) -> dict:
    """Vocabulary size with added tokens; special ids from tokenizer_config.json, EOS by its usual names else."""
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    named = _configured_special_tokens(source)
    eos = named.get("eos") or next((name for name in EOS_NAMES if name in vocab), None)
    if eos not in vocab:
        raise TokenizerError(
            f"tokenizer.from={source}: no EOS token found (tokenizer_config.json's eos_token, or one of "
            f"{', '.join(EOS_NAMES)}); add eos_token to {source / 'tokenizer_config.json'}"
        )
    ids = {f"{k}_id": vocab.get(named.get(k) or "", -1) for k in ("unk", "bos", "pad")}
    return {
        "path": f"{TOKENIZER_DIR}/{HF_FILE}",
        "vocab_size": tokenizer.tokenizer.get_vocab_size(with_added_tokens=True),
        "eos_id": vocab[eos],
        **ids,
        "source": str(hf_file),
    }


def _configured_special_tokens(source: Path) -> dict[str, str]:
    """{"eos": "</s>", ...} from the folder's tokenizer_config.json (a token is a string or {"content": ...})."""
    path = source / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    named = {}
    for kind in ("unk", "bos", "eos", "pad"):
        token = config.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            named[kind] = token
    return named


# --- `pipeline train-tokenizer` -----------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument("--input", required=True, help="a kept/ folder, a `pipeline dedup` output, or a jsonl file")
    parser.add_argument("--output", required=True, help="folder; the model goes to OUTPUT/tokenizer/")
    parser.add_argument("--config", default=None, help="recipe YAML (its `tokenizer` section is used)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")


def run(args: Any) -> int:
    """Train a tokenizer from the command line; prints the model path, vocab size and sha256."""
    from data_pipeline.config import load_recipe

    settings = load_recipe(args.config, args.set).tokenizer
    info = train_tokenizer(kept_files(args.input), args.output, settings)
    print(f"tokenizer: {Path(args.output) / info['path']}")
    print(f"vocab_size: {info['vocab_size']}  eos_id: {info['eos_id']}  sha256: {info['sha256']}")
    return 0
