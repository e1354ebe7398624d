"""Quality filters after Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024).

Each rule is a small function `measure(stats, cfg) -> float | None` with its own switch and thresholds in
`FiltersConfig` and its own drop reason `filter:<rule>`: it returns the measured value that broke its limit
(a ratio, a count, a length), or None when the text passes. A document is dropped by the first rule it fails,
in the order of RULES (cheap rules first), so every dropped document has exactly one reason in the ledger, and
the value goes to DIR/dropped/ so a user can see how far over the limit it was.

The defaults are the published web-text values (`filters.profile: web`). Source code, man pages and API docs
fail several of them (curly braces, short lines, few sentences): the `code`, `docs` and `none` profiles in
config.py are the starting points for such corpora.

The rules read the document's language (data_pipeline/language.py). For scripts written without spaces
(Chinese, Japanese, Thai, ...) a word is one character of that script (a run of Latin letters or digits in
between stays one word): segmenting needs a dictionary and a tokenizer per language (jieba, MeCab, PyThaiNLP)
at many times the cost of all the rules together, while characters are a fixed unit that every such script has.
A Chinese word is about 1.5 characters, so the word-count limits become slightly more lenient in characters,
never stricter; the mean-word-length rule, which means nothing for one-character words, is off for them, and
the n-gram repetition rules take two characters for a word (an n-gram is a phrase of n words in any language;
as n characters, the Japanese tutorial's list methods page failed dup_ngrams at 0.20 under the web profile).
Stop words are counted from a per-language list (`language.STOP_WORDS`); without a list the rule is off.
Sentences also end at the full stops of CJK, Devanagari, Arabic, Myanmar, Khmer and Tibetan; Thai and Lao mark
no sentence end, so min_sentences and terminal_punctuation are off for them.

Before any rule: the URL block list (`filter:url_blocklist`) and the language list (`filter:language`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from data_pipeline.config import FiltersConfig
from data_pipeline.language import STOP_WORDS, is_unspaced

BULLETS = ("•", "●", "○", "◦", "▪", "▫", "‣", "⁃", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
_FULL_STOPS = "。！？｡।॥؟۔።။។།"  # CJK, Devanagari, Arabic/Urdu, Ethiopic, Myanmar, Khmer, Tibetan
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", ":", "」", "』", "）", *_FULL_STOPS)
NO_SENTENCE_MARKS = frozenset({"th", "lo"})  # Thai and Lao end sentences with a space
_SENTENCE_END = re.compile(rf"[.!?]+(?:\s|$)|[{_FULL_STOPS}]+")
# Han (with extensions and compatibility ideographs), kana, Thai, Lao, Tibetan, Myanmar, Khmer, Yi
_UNSPACED = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
    "\u0e00-\u0e7f\u0e80-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\ua000-\ua4cf"
)
_UNSPACED_WORD = re.compile(rf"[{_UNSPACED}]|(?:(?![{_UNSPACED}])[^\W_])+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_ALNUM = re.compile(r"[^\W_]")  # a letter or a digit
_ALPHA = re.compile(r"[^\W\d_]")  # a letter
_ALNUM_RUN = re.compile(r"[^\W_]+")


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
    """Lines, words and paragraphs of one text in its language, split once and shared by all rules."""

    text: str
    language: str = "en"

    @cached_property
    def unspaced(self) -> bool:
        return is_unspaced(self.language)

    @property
    def tokens_per_word(self) -> int:
        """Word tokens per word in the n-gram rules: 2 characters for unspaced scripts (a Chinese or Japanese
        word is 1.5-2 characters), so an n-gram is a phrase of n words there too, not of n characters."""
        return 2 if self.unspaced else 1

    @cached_property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.split("\n") if line.strip()]

    @cached_property
    def tokens(self) -> list[str]:
        return self.text.split()

    @cached_property
    def words(self) -> list[str]:
        """Whitespace tokens that hold a letter or digit (punctuation-only tokens are not words); for a language
        written without spaces, each character of its script and each run of other letters and digits."""
        if self.unspaced:
            return _UNSPACED_WORD.findall(self.text)
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


def _above(value: float, limit: float) -> float | None:
    """`value` when it exceeds `limit` (the rule fails with that measurement), else None."""
    return value if value > limit else None


def _below(value: float, limit: float) -> float | None:
    return value if value < limit else None


def _first_failure(*measures: float | None) -> float | None:
    """The first measurement that failed its limit, for rules that check several."""
    return next((m for m in measures if m is not None), None)


def word_count(s: TextStats, cfg: FiltersConfig) -> float | None:
    n = len(s.words)
    return _first_failure(_below(n, cfg.min_words), _above(n, cfg.max_words))


def mean_word_length(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Off for languages written without spaces, whose words are counted as characters."""
    if s.unspaced:
        return None
    mean = _ratio(sum(len(w) for w in s.words), len(s.words))
    return _first_failure(_below(mean, cfg.min_mean_word_length), _above(mean, cfg.max_mean_word_length))


def symbol_ratio(s: TextStats, cfg: FiltersConfig) -> float | None:
    symbols = s.text.count("#") + s.text.count("...") + s.text.count("…")
    return _above(_ratio(symbols, len(s.words)), cfg.max_symbol_word_ratio)


def bullet_lines(s: TextStats, cfg: FiltersConfig) -> float | None:
    bullets = sum(line.startswith(BULLETS) for line in s.lines)
    return _above(_ratio(bullets, len(s.lines)), cfg.max_bullet_lines_ratio)


def ellipsis_lines(s: TextStats, cfg: FiltersConfig) -> float | None:
    ellipsis = sum(line.endswith(ELLIPSES) for line in s.lines)
    return _above(_ratio(ellipsis, len(s.lines)), cfg.max_ellipsis_lines_ratio)


def alpha_words(s: TextStats, cfg: FiltersConfig) -> float | None:
    alpha = sum(1 for t in s.tokens if _ALPHA.search(t))
    return _below(_ratio(alpha, len(s.tokens)), cfg.min_alpha_words_ratio)


def stop_words(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Off for a language without a stop-word list."""
    words = STOP_WORDS.get(s.language)
    return None if words is None else _below(sum(w in words for w in s.lower_words), cfg.min_stop_words)


def repeated_lines(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Value: the share of repeated lines, or (when only that passes) the share of their characters."""
    count, chars = s.line_duplicates
    total_chars = sum(len(line) for line in s.lines)
    return _first_failure(
        _above(_ratio(count, len(s.lines)), cfg.max_dup_line_ratio),
        _above(_ratio(chars, total_chars), cfg.max_dup_line_char_ratio),
    )


def repeated_paragraphs(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Value: the share of repeated paragraphs, or (when only that passes) the share of their characters."""
    count, chars = _duplicates(s.paragraphs)
    total_chars = sum(len(p) for p in s.paragraphs)
    return _first_failure(
        _above(_ratio(count, len(s.paragraphs)), cfg.max_dup_para_ratio),
        _above(_ratio(chars, total_chars), cfg.max_dup_para_char_ratio),
    )


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n)), strict=False))


def top_ngrams(s: TextStats, cfg: FiltersConfig) -> float | None:
    """The characters of the most frequent 2/3/4-gram, over all word characters, stay under the limits.

    Value: the character share of the first n-gram (2, then 3, then 4) over its limit.
    """
    words = s.lower_words
    total = sum(len(w) for w in words)
    limits = {2: cfg.max_top_2gram_char_ratio, 3: cfg.max_top_3gram_char_ratio, 4: cfg.max_top_4gram_char_ratio}
    for n, limit in limits.items():
        counts = Counter(_ngrams(words, n * s.tokens_per_word))
        if counts:
            gram, freq = counts.most_common(1)[0]
            share = _ratio(sum(len(w) for w in gram) * freq, total)
            if freq > 1 and share > limit:
                return share
    return None


def _dup_ngram_char_ratio(words: list[str], n: int) -> float:
    """Fraction of word characters inside a repeat of an earlier n-gram (each word counted once).

    Repeats only, as the Gopher paper and datatrove count: a passage quoted twice counts once, not twice.
    """
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i, gram in enumerate(_ngrams(words, n)):
        if gram in seen:
            covered[i : i + n] = [True] * n
        seen.add(gram)
    return _ratio(sum(len(w) for w, c in zip(words, covered, strict=True) if c), sum(len(w) for w in words))


def dup_ngrams(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Gopher's duplicate 5..10-gram character fractions; the limit falls linearly from the 5- to the 10-gram one.

    The words covered by repeated (n+1)-grams are a subset of those covered by repeated n-grams, so when the
    5-gram fraction is already under the strictest (10-gram) limit every n passes: one pass for most documents.
    Value: the fraction of the smallest n over its limit.
    """
    words = s.lower_words
    step = (cfg.max_dup_5gram_char_ratio - cfg.max_dup_10gram_char_ratio) / 5
    scale = s.tokens_per_word
    first = _dup_ngram_char_ratio(words, 5 * scale)
    if first <= min(cfg.max_dup_5gram_char_ratio, cfg.max_dup_10gram_char_ratio):
        return None
    if first > cfg.max_dup_5gram_char_ratio:
        return first
    for n in range(6, 11):
        share = _dup_ngram_char_ratio(words, n * scale)
        if share > cfg.max_dup_5gram_char_ratio - step * (n - 5):
            return share
    return None


def lorem_ipsum(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Value: how many times the phrase occurs."""
    return _above(s.text.lower().count("lorem ipsum"), 0)


def curly_braces(s: TextStats, cfg: FiltersConfig) -> float | None:
    """Value: the number of `{`."""
    return _above(s.text.count("{"), 0)


def min_sentences(s: TextStats, cfg: FiltersConfig) -> float | None:
    if s.language in NO_SENTENCE_MARKS:
        return None
    return _below(len(_SENTENCE_END.findall(s.text)), cfg.min_num_sentences)


def terminal_punctuation(s: TextStats, cfg: FiltersConfig) -> float | None:
    if s.language in NO_SENTENCE_MARKS:
        return None
    ended = sum(line.endswith(TERMINAL_PUNCT) for line in s.lines)
    return _below(_ratio(ended, len(s.lines)), cfg.min_terminal_punct_line_ratio)


def short_lines(s: TextStats, cfg: FiltersConfig) -> float | None:
    short = sum(len(line) <= cfg.short_line_chars for line in s.lines)
    return _above(_ratio(short, len(s.lines)), cfg.max_short_line_ratio)


def dup_line_chars(s: TextStats, cfg: FiltersConfig) -> float | None:
    _, chars = s.line_duplicates
    return _above(_ratio(chars, len(s.text.replace("\n", ""))), cfg.max_dup_line_chars_ratio)


def newline_ratio(s: TextStats, cfg: FiltersConfig) -> float | None:
    return _above(_ratio(s.text.count("\n"), len(s.words)), cfg.max_newline_word_ratio)


def line_length(s: TextStats, cfg: FiltersConfig) -> float | None:
    """The Stack's minified/generated-file rule: value is the longest line, or (when only that passes) the mean."""
    lengths = [len(line) for line in s.text.split("\n")]
    return _first_failure(
        _above(max(lengths), cfg.max_line_chars), _above(_ratio(sum(lengths), len(lengths)), cfg.max_mean_line_chars)
    )


def alnum_chars(s: TextStats, cfg: FiltersConfig) -> float | None:
    """The Stack's data-file rule: the share of letters and digits among all characters."""
    alnum = sum(len(run) for run in _ALNUM_RUN.findall(s.text))
    return _below(_ratio(alnum, len(s.text)), cfg.min_alnum_char_ratio)


Rule = Callable[[TextStats, FiltersConfig], "float | None"]  # the measured value when the text fails, else None

# Cheap rules first; the name is both the config switch and the ledger reason `filter:<name>`.
RULES: list[tuple[str, Rule]] = [
    (f.__name__, f)
    for f in (
        word_count, mean_word_length, lorem_ipsum, curly_braces, symbol_ratio, alpha_words, stop_words,
        bullet_lines, ellipsis_lines, terminal_punctuation, short_lines, newline_ratio, min_sentences,
        line_length, alnum_chars, repeated_lines, dup_line_chars, repeated_paragraphs, top_ngrams, dup_ngrams,
    )
]  # fmt: skip


def failed_rule(text: str, cfg: FiltersConfig, language: str = "en") -> tuple[str, float] | None:
    """(name, measured value) of the first enabled rule `text` in `language` fails, or None when it passes all."""
    if not cfg.enabled:
        return None
    stats = TextStats(text, language)
    for name, measure in RULES:
        if getattr(cfg, name):
            value = measure(stats, cfg)
            if value is not None:
                return name, float(value)
    return None


def drop_reason(text: str, cfg: FiltersConfig, language: str = "en") -> tuple[str, float] | None:
    """(ledger reason `filter:<rule>`, the measured value that failed) for dropping `text`, or None to keep it."""
    failed = failed_rule(text, cfg, language)
    return None if failed is None else (f"filter:{failed[0]}", failed[1])


def language_drop(label: str, score: float, cfg: FiltersConfig) -> tuple[str, float] | None:
    """("filter:language", the score) when filters.languages is a list the label is not in with enough score."""
    if cfg.languages == "all" or (label in cfg.languages and score >= cfg.min_language_score):
        return None
    return "filter:language", score


@dataclass(frozen=True)
class UrlBlocklist:
    """Domains (matching their subdomains) and URL prefixes, one a line in a file; `#` starts a comment.

    A line `example.com` blocks every URL on example.com and *.example.com; `example.com/ads/` blocks the URLs
    on those hosts whose path starts with /ads/. Lookup walks the URL's host suffixes: O(labels), any list size.
    """

    paths_by_domain: dict[str, tuple[str, ...]]

    @classmethod
    def from_file(cls, path: str) -> UrlBlocklist:
        found: dict[str, list[str]] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                entry = line.split("#")[0].strip().lower()
                if entry:
                    host, path_prefix = _host_and_path(entry if "://" in entry else f"http://{entry}")
                    found.setdefault(host, []).append(path_prefix)
        return cls({host: tuple(paths) for host, paths in found.items()})

    def blocks(self, url: str) -> bool:
        host, path = _host_and_path(url.lower())
        labels = host.split(".")
        for i in range(len(labels)):
            prefixes = self.paths_by_domain.get(".".join(labels[i:]))
            if prefixes and any(path.startswith(p) for p in prefixes):
                return True
        return False


def _host_and_path(url: str) -> tuple[str, str]:
    """(host without port or www., path) of an absolute URL; the path is '' when the URL has none."""
    rest = url.split("://", 1)[-1]
    host, slash, path = rest.partition("/")
    host = host.rsplit("@", 1)[-1].split(":")[0].removeprefix("www.")
    return host, slash + path
