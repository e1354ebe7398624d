"""The pipeline recipe: one dataclass per section, a YAML file, then `--set section.key=value` overrides.

Every value is checked when the recipe is built, and every error names the `section.key` it is about, so a typo
in a 200-line recipe fails in the first second instead of after an hour of reading. Unknown keys are errors.
Reading YAML and `--set`, key checks with "did you mean" and type conversion are `config_schema`'s, shared with the
trainer's run config; the `__post_init__` checks here are what only the pipeline knows.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_pipeline.errors import PipelineError
from infra.config_schema import ConfigSchema, field_types, suggest


class RecipeError(PipelineError):
    """A recipe value or key is wrong; the message names `section.key`."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"recipe: {key} {message}")


@dataclass
class ReadConfig:
    text_field: str = "text"
    id_field: str = "id"
    max_chars: int = 1_000_000
    strict: bool = False
    txt_mode: str = "file"  # "file": one document per .txt file; "blocks": one per blank-line separated block
    # a task (unit of work, kept/part-NNNNN.jsonl) is a file or a byte range of at most this many bytes of an
    # uncompressed jsonl file (data_pipeline/tasks.py)
    task_bytes: int = 134_217_728
    # the input record's fields that travel into kept/ next to id, text and source: "all", "none" or a list
    keep_fields: list[str] | str = "all"
    # a task whose read fails transiently (a dropped connection, a timeout, EIO) is redone from its start at most
    # this many times, the n-th after retry_backoff_s * 2**(n-1) s plus jitter (data_pipeline/retries.py): 3 rides
    # out a store's brief outage (~1 + 2 + 4 s and jitter) after its client's own retries, and a store that stays
    # down still ends the job within ~15 s
    retries: int = 3
    retry_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        _check(
            isinstance(self.keep_fields, list) or self.keep_fields in ("all", "none"),
            "read.keep_fields",
            f"must be all, none or a list of field names, got {self.keep_fields!r}",
        )
        _check(self.task_bytes > 0, "read.task_bytes", f"must be > 0, got {self.task_bytes}")
        _check(self.retries >= 0, "read.retries", f"must be >= 0 (0: fail at the first error), got {self.retries}")
        _check(self.retry_backoff_s >= 0, "read.retry_backoff_s", f"must be >= 0 seconds, got {self.retry_backoff_s}")
        _check(bool(self.text_field), "read.text_field", "must be a non-empty field name")
        _check(bool(self.id_field), "read.id_field", "must be a non-empty field name")
        _check(self.max_chars > 0, "read.max_chars", f"must be > 0, got {self.max_chars}")
        _check(
            self.txt_mode in ("file", "blocks"), "read.txt_mode", f"must be 'file' or 'blocks', got {self.txt_mode!r}"
        )


@dataclass
class FiltersConfig:
    """Quality rules after Gopher, C4, FineWeb and The Stack: a switch per rule, then its thresholds.

    The defaults are the `web` profile; `profile` picks another starting point (FILTER_PROFILES) and keys set
    in the recipe or by --set are applied on top of it.
    """

    enabled: bool = True
    profile: str = "web"
    # language identification (fastText lid.176, data_pipeline/language.py): "all" keeps every language, or a
    # list of ISO 639 codes (en, de, zh, ...) to keep, each document's label needing min_language_score
    languages: list[str] | str = "all"
    min_language_score: float = 0.65
    # a file of domains (matching their subdomains) and URL prefixes, one a line; "" for none
    url_blocklist: str = ""
    # Gopher quality
    word_count: bool = True
    min_words: int = 50
    max_words: int = 100_000
    mean_word_length: bool = True
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    symbol_ratio: bool = True
    max_symbol_word_ratio: float = 0.1
    bullet_lines: bool = True
    max_bullet_lines_ratio: float = 0.9
    ellipsis_lines: bool = True
    max_ellipsis_lines_ratio: float = 0.3
    alpha_words: bool = True
    min_alpha_words_ratio: float = 0.8
    stop_words: bool = True
    min_stop_words: int = 2
    # Gopher repetition
    repeated_lines: bool = True
    max_dup_line_ratio: float = 0.3
    max_dup_line_char_ratio: float = 0.2
    repeated_paragraphs: bool = True
    max_dup_para_ratio: float = 0.3
    max_dup_para_char_ratio: float = 0.2
    top_ngrams: bool = True
    max_top_2gram_char_ratio: float = 0.20
    max_top_3gram_char_ratio: float = 0.18
    max_top_4gram_char_ratio: float = 0.16
    dup_ngrams: bool = True
    max_dup_5gram_char_ratio: float = 0.15
    max_dup_10gram_char_ratio: float = 0.10
    # C4
    lorem_ipsum: bool = True
    curly_braces: bool = True
    min_sentences: bool = True
    min_num_sentences: int = 5
    # FineWeb
    terminal_punctuation: bool = True
    min_terminal_punct_line_ratio: float = 0.12
    short_lines: bool = True
    short_line_chars: int = 30
    max_short_line_ratio: float = 0.67
    dup_line_chars: bool = True
    max_dup_line_chars_ratio: float = 0.01
    newline_ratio: bool = True
    max_newline_word_ratio: float = 0.3
    # The Stack (Kocetkov et al. 2022): minified, generated or data files; off for web text
    line_length: bool = False
    max_line_chars: int = 1000
    max_mean_line_chars: float = 100.0
    alnum_chars: bool = False
    min_alnum_char_ratio: float = 0.25

    @classmethod
    def from_profile(cls, profile: str = "web", **keys: Any) -> FiltersConfig:
        """The profile's settings, then `keys` on top: what a recipe's `filters:` section means."""
        return cls(profile=profile, **{**FILTER_PROFILES.get(profile, {}), **keys})

    def __post_init__(self) -> None:
        _check(
            self.profile in FILTER_PROFILES,
            "filters.profile",
            f"must be one of {', '.join(FILTER_PROFILES)}; {suggest(self.profile, list(FILTER_PROFILES))}"
            f"got {self.profile!r}",
        )
        for name, declared in field_types(FiltersConfig).items():
            value = getattr(self, name)
            key = f"filters.{name}"
            if name in ("profile", "languages", "url_blocklist"):
                continue
            if declared is bool:
                _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
            elif name.endswith("ratio"):
                _check(_is_number(value) and 0 <= value <= 1e9, key, f"must be a number >= 0, got {value!r}")
            else:
                _check(_is_number(value) and value >= 0, key, f"must be a number >= 0, got {value!r}")
        _check(
            self.languages == "all"
            or (isinstance(self.languages, list) and all(re.fullmatch(r"[a-z]{2,3}", c) for c in self.languages)),
            "filters.languages",
            f"must be all or a list of fastText lid.176 codes such as [en, de, zh], got {self.languages!r}",
        )
        _check(self.min_language_score <= 1, "filters.min_language_score", "must be in [0, 1]")
        _check(
            not self.url_blocklist or Path(self.url_blocklist).is_file(),
            "filters.url_blocklist",
            f"names no readable file: {self.url_blocklist!r}; give a file of domains and URL prefixes, one a line",
        )
        _check(self.min_words <= self.max_words, "filters.min_words", "must be <= filters.max_words")
        _check(
            self.min_mean_word_length <= self.max_mean_word_length,
            "filters.min_mean_word_length",
            "must be <= filters.max_mean_word_length",
        )


def _rule_switches() -> list[str]:
    """The per-rule on/off keys of FiltersConfig (every bool but the master switch)."""
    return [name for name, declared in field_types(FiltersConfig).items() if declared is bool and name != "enabled"]


# What each `filters.profile` changes from the web-text defaults; recipe keys and --set apply on top.
FILTER_PROFILES: dict[str, dict[str, Any]] = {
    "web": {},
    # man pages, package docs, API docs and docstrings: prose between code samples, option lists and headings,
    # with identifiers and paths for words and the same phrases repeated option after option (repetition limits
    # doubled: at the web limits dup_ngrams alone dropped 35% of man pages, see README)
    "docs": {
        "min_words": 30, "min_num_sentences": 2, "max_newline_word_ratio": 0.5, "max_mean_word_length": 15.0,
        "curly_braces": False, "short_lines": False, "dup_line_chars": False, "terminal_punctuation": False,
        "symbol_ratio": False, "alpha_words": False,
        "max_dup_line_ratio": 0.5, "max_dup_line_char_ratio": 0.4,
        "max_top_2gram_char_ratio": 0.4, "max_top_3gram_char_ratio": 0.36, "max_top_4gram_char_ratio": 0.32,
        "max_dup_5gram_char_ratio": 0.3, "max_dup_10gram_char_ratio": 0.2,
    },
    # source code: The Stack's line-length and alphanumeric rules instead of the prose rules
    "code": {
        **{name: False for name in _rule_switches() if name not in ("word_count", "lorem_ipsum")},
        "min_words": 10, "line_length": True, "alnum_chars": True,
    },
    "none": {name: False for name in _rule_switches()},
}  # fmt: skip


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    # estimated Jaccard a candidate pair needs to count as a near duplicate (of the very document kept for it);
    # None: the threshold less 2 standard deviations of the MinHash estimate (0.729 at 0.8 / 128); 0: every candidate
    verify_threshold: float | None = None
    keep: str = "first"  # which document a cluster keeps: "first" (input order) or "longest" (ties: input order)
    # MinHash family: mersenne61 (exact (a*h+b) mod 2^61-1 over the top 32 bits of each 64-bit shingle hash,
    # datasketch's "legacy") or affine32 (datasketch 2.x's default, a*fmix32(h)+b mod 2^32; see BENCHMARKS.md)
    scheme: str = "mersenne61"
    # shingles: words (ngram consecutive words), chars (ngram consecutive letters, separators dropped) or auto
    # (letter by letter: Han/kana/Thai/Lao/Khmer/Myanmar/Tibetan/Yi letters are tokens alone, others make words)
    shingle: str = "auto"
    # keep dedup/work/ (the scan's per-task files, ~560 B per document plus the compressed documents) after the
    # stage, so that a rerun with another threshold, bands/rows, verify_threshold, keep or exact decides again
    # without rescanning; false: each rank deletes its own tasks' work files at the end
    keep_work: bool = True

    def __post_init__(self) -> None:
        _check(0 < self.threshold < 1, "dedup.threshold", f"must be in (0, 1), got {self.threshold}")
        _check(self.num_perm >= 2, "dedup.num_perm", f"must be >= 2, got {self.num_perm}")
        _check(self.ngram >= 1, "dedup.ngram", f"must be >= 1, got {self.ngram}")
        _check((self.bands is None) == (self.rows is None), "dedup.bands", "and dedup.rows must be given together")
        if self.bands is not None:
            _check(self.bands * self.rows <= self.num_perm, "dedup.bands", "× dedup.rows must be <= dedup.num_perm")
        if self.verify_threshold is not None:
            _check(0 <= self.verify_threshold <= 1, "dedup.verify_threshold", "must be in [0, 1] or null")
        _check(
            self.scheme in ("mersenne61", "affine32"), "dedup.scheme", f"use mersenne61|affine32, got {self.scheme!r}"
        )
        _check(
            self.shingle in ("words", "chars", "auto"), "dedup.shingle", f"use words|chars|auto, got {self.shingle!r}"
        )
        _check(self.keep in ("first", "longest"), "dedup.keep", f"use first|longest, got {self.keep!r}")


@dataclass
class TokenizerConfig:
    vocab_size: int = 32000
    model_type: str = "bpe"
    input_sentence_size: int = 1_000_000
    character_coverage: float = 0.9995
    byte_fallback: bool = True
    split_digits: bool = True
    seed: int = 0
    num_threads: int = 0  # 0: a fixed 16 training threads (sentencepiece's model depends on the thread count)
    # `tokenizer.from`: an existing tokenizer's folder (Hugging Face tokenizer.json, or a SentencePiece .model)
    # to tokenize with instead of training one; the training settings above are then unused
    from_dir: str = ""

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 16, "tokenizer.vocab_size", f"must be >= 16, got {self.vocab_size}")
        _check(self.model_type in ("bpe", "unigram"), "tokenizer.model_type", "must be 'bpe' or 'unigram'")
        _check(self.input_sentence_size > 100, "tokenizer.input_sentence_size", "must be > 100 (sentencepiece)")
        _check(0 < self.character_coverage <= 1, "tokenizer.character_coverage", "must be in (0, 1]")
        _check(self.num_threads >= 0, "tokenizer.num_threads", "must be >= 0 (0 = 16 threads)")


@dataclass
class ShardsConfig:
    target_bytes: int = 268_435_456
    validation_fraction: float = 0.005
    encode_threads: int = 0

    def __post_init__(self) -> None:
        _check(self.target_bytes > 0, "shards.target_bytes", "must be > 0")
        _check(0 <= self.validation_fraction < 1, "shards.validation_fraction", "must be in [0, 1)")
        _check(
            self.encode_threads >= 0,
            "shards.encode_threads",
            "must be >= 0 (0 = this rank's share of the node's cores)",
        )


@dataclass
class PipelineConfig:
    read: ReadConfig = field(default_factory=ReadConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    workers: int = 0  # local worker processes; 0: this rank's share of the node's cores

    def __post_init__(self) -> None:
        _check(
            isinstance(self.workers, int) and self.workers >= 0,
            "workers",
            "must be an integer >= 0 (0 = this rank's share of the node's cores)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


SCHEMA = ConfigSchema(PipelineConfig, RecipeError, prefix="recipe: ", builders={"filters": FiltersConfig.from_profile})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# `from` is a Python keyword, so no dataclass field can carry it: the key users write names the field `from_dir`
KEY_ALIASES = {"tokenizer.from": "tokenizer.from_dir"}


def load_recipe(yaml_path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> PipelineConfig:
    """Defaults, then the YAML file, then each `--set section.key=value`, validated once at the end."""
    tree = (
        SCHEMA.layer({}, _unaliased(SCHEMA.read_yaml(yaml_path)), origin=str(yaml_path))
        if yaml_path is not None
        else {}
    )
    for text in overrides:
        key, value = SCHEMA.parse_override(text)
        SCHEMA.set(tree, KEY_ALIASES.get(key, key), value, origin="--set")
    return SCHEMA.build(tree)


def _unaliased(document: dict[str, Any]) -> dict[str, Any]:
    """A recipe file's sections with KEY_ALIASES' keys under their field names."""
    document = {name: dict(body) if isinstance(body, dict) else body for name, body in document.items()}
    for alias, key in KEY_ALIASES.items():
        section, name = alias.split(".")
        body = document.get(section)
        if isinstance(body, dict) and name in body:
            body[key.split(".")[1]] = body.pop(name)
    return document


def save_recipe(config: PipelineConfig, path: str | Path) -> None:
    """Write the resolved recipe (every value, defaults included) so an output folder says how it was made."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
