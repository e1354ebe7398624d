"""Quality filters after Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024).

Each rule is a small function `keep(doc, cfg) -> bool` with its own switch and thresholds in `FiltersConfig`
and its own drop reason `filter:<rule>`. A document is dropped by the first rule it fails, in the order of
RULES (cheap rules first), so every dropped document has exactly one reason in the ledger. Defaults are the
published web-text values; code and API docs fail several of them (curly braces, short lines), which is why
the built-in demo corpus ships its own recipe.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from data_pipeline.config import FiltersConfig

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list
BULLETS = ("•", "●", "○", "◦", "▪", "▫", "‣", "⁃", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", ":")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_ALNUM = re.compile(r"[^\W_]")  # a letter or a digit
_ALPHA = re.compile(r"[^\W\d_]")  # a letter


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number, total chars) of items that repeat an earlier item."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        seen.add(item)
    return count, chars


@dataclass
class TextStats:
    """Lines, words and paragraphs of one text, split once and shared by all rules."""

    text: str

    @cached_property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.split("\n") if line.strip()]

    @cached_property
    def tokens(self) -> list[str]:
        return self.text.split()

    @cached_property
    def words(self) -> list[str]:
        """Whitespace tokens that hold a letter or digit (punctuation-only tokens are not words)."""
        return [t for t in self.tokens if _ALNUM.search(t)]

    @cached_property
    def lower_words(self) -> list[str]:
        return [w.lower() for w in self.words]

    @cached_property
    def line_duplicates(self) -> tuple[int, int]:
        """(number, total chars) of lines that repeat an earlier line."""
        return _duplicates(self.lines)

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in _PARAGRAPH_BREAK.split(self.text) if p.strip()]


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def word_count(s: TextStats, cfg: FiltersConfig) -> bool:
    return cfg.min_words <= len(s.words) <= cfg.max_words


def mean_word_length(s: TextStats, cfg: FiltersConfig) -> bool:
    mean = _ratio(sum(len(w) for w in s.words), len(s.words))
    return cfg.min_mean_word_length <= mean <= cfg.max_mean_word_length


def symbol_ratio(s: TextStats, cfg: FiltersConfig) -> bool:
    symbols = s.text.count("#") + s.text.count("...") + s.text.count("…")
    return _ratio(symbols, len(s.words)) <= cfg.max_symbol_word_ratio


def bullet_lines(s: TextStats, cfg: FiltersConfig) -> bool:
    bullets = sum(line.startswith(BULLETS) for line in s.lines)
    return _ratio(bullets, len(s.lines)) <= cfg.max_bullet_lines_ratio


def ellipsis_lines(s: TextStats, cfg: FiltersConfig) -> bool:
    ellipsis = sum(line.endswith(ELLIPSES) for line in s.lines)
    return _ratio(ellipsis, len(s.lines)) <= cfg.max_ellipsis_lines_ratio


def alpha_words(s: TextStats, cfg: FiltersConfig) -> bool:
    alpha = sum(1 for t in s.tokens if _ALPHA.search(t))
    return _ratio(alpha, len(s.tokens)) >= cfg.min_alpha_words_ratio


def stop_words(s: TextStats, cfg: FiltersConfig) -> bool:
    return sum(w in STOP_WORDS for w in s.lower_words) >= cfg.min_stop_words


def repeated_lines(s: TextStats, cfg: FiltersConfig) -> bool:
    count, chars = s.line_duplicates
    total_chars = sum(len(line) for line in s.lines)
    return (
        _ratio(count, len(s.lines)) <= cfg.max_dup_line_ratio
        and _ratio(chars, total_chars) <= cfg.max_dup_line_char_ratio
    )


def repeated_paragraphs(s: TextStats, cfg: FiltersConfig) -> bool:
    count, chars = _duplicates(s.paragraphs)
    total_chars = sum(len(p) for p in s.paragraphs)
    return (
        _ratio(count, len(s.paragraphs)) <= cfg.max_dup_para_ratio
        and _ratio(chars, total_chars) <= cfg.max_dup_para_char_ratio
    )


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n)), strict=False))


def top_ngrams(s: TextStats, cfg: FiltersConfig) -> bool:
    """The characters of the most frequent 2/3/4-gram, over all word characters, stay under the limits."""
    words = s.lower_words
    total = sum(len(w) for w in words)
    limits = {2: cfg.max_top_2gram_char_ratio, 3: cfg.max_top_3gram_char_ratio, 4: cfg.max_top_4gram_char_ratio}
    for n, limit in limits.items():
        counts = Counter(_ngrams(words, n))
        if counts:
            gram, freq = counts.most_common(1)[0]
            if freq > 1 and _ratio(sum(len(w) for w in gram) * freq, total) > limit:
                return False
    return True


def _dup_ngram_char_ratio(words: list[str], n: int) -> float:
    """Fraction of word characters inside some n-gram that occurs more than once (each word counted once)."""
    grams = _ngrams(words, n)
    counts = Counter(grams)
    covered = [False] * len(words)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = [True] * n
    return _ratio(sum(len(w) for w, c in zip(words, covered, strict=True) if c), sum(len(w) for w in words))


def dup_ngrams(s: TextStats, cfg: FiltersConfig) -> bool:
    """Gopher's duplicate 5..10-gram character fractions; the limit falls linearly from the 5- to the 10-gram one.

    The words covered by repeated (n+1)-grams are a subset of those covered by repeated n-grams, so when the
    5-gram fraction is already under the strictest (10-gram) limit every n passes: one pass for most documents.
    """
    words = s.lower_words
    step = (cfg.max_dup_5gram_char_ratio - cfg.max_dup_10gram_char_ratio) / 5
    first = _dup_ngram_char_ratio(words, 5)
    if first <= min(cfg.max_dup_5gram_char_ratio, cfg.max_dup_10gram_char_ratio):
        return True
    if first > cfg.max_dup_5gram_char_ratio:
        return False
    return all(_dup_ngram_char_ratio(words, n) <= cfg.max_dup_5gram_char_ratio - step * (n - 5) for n in range(6, 11))


def lorem_ipsum(s: TextStats, cfg: FiltersConfig) -> bool:
    return "lorem ipsum" not in s.text.lower()


def curly_braces(s: TextStats, cfg: FiltersConfig) -> bool:
    return "{" not in s.text


def min_sentences(s: TextStats, cfg: FiltersConfig) -> bool:
    return len(_SENTENCE_END.findall(s.text)) >= cfg.min_num_sentences


def terminal_punctuation(s: TextStats, cfg: FiltersConfig) -> bool:
    ended = sum(line.endswith(TERMINAL_PUNCT) for line in s.lines)
    return _ratio(ended, len(s.lines)) >= cfg.min_terminal_punct_line_ratio


def short_lines(s: TextStats, cfg: FiltersConfig) -> bool:
    short = sum(len(line) <= cfg.short_line_chars for line in s.lines)
    return _ratio(short, len(s.lines)) <= cfg.max_short_line_ratio


def dup_line_chars(s: TextStats, cfg: FiltersConfig) -> bool:
    _, chars = s.line_duplicates
    return _ratio(chars, len(s.text.replace("\n", ""))) <= cfg.max_dup_line_chars_ratio


def newline_ratio(s: TextStats, cfg: FiltersConfig) -> bool:
    return _ratio(s.text.count("\n"), len(s.words)) <= cfg.max_newline_word_ratio


Rule = Callable[[TextStats, FiltersConfig], bool]

# Cheap rules first; the name is both the config switch and the ledger reason `filter:<name>`.
RULES: list[tuple[str, Rule]] = [
    (f.__name__, f)
    for f in (
        word_count, mean_word_length, lorem_ipsum, curly_braces, symbol_ratio, alpha_words, stop_words,
        bullet_lines, ellipsis_lines, terminal_punctuation, short_lines, newline_ratio, min_sentences,
        repeated_lines, dup_line_chars, repeated_paragraphs, top_ngrams, dup_ngrams,
    )
]  # fmt: skip


def failed_rule(text: str, cfg: FiltersConfig) -> str | None:
    """The first enabled rule `text` fails, or None when it passes them all."""
    if not cfg.enabled:
        return None
    stats = TextStats(text)
    for name, keep in RULES:
        if getattr(cfg, name) and not keep(stats, cfg):
            return name
    return None


def drop_reason(text: str, cfg: FiltersConfig) -> str | None:
    """The ledger reason (`filter:<rule>`) for dropping `text`, or None to keep it."""
    rule = failed_rule(text, cfg)
    return None if rule is None else f"filter:{rule}"
