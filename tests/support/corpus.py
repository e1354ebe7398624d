"""The one synthetic corpus of the tests and the benchmarks: seeded prose, planted copies, jsonl files.

Every text is drawn from a seeded RNG, so a test's corpus is the same on every machine and a benchmark's
corpus the same in every run. Prose is sentences of words from a vocabulary: `TOPIC_WORDS` for the tiny
training set (learnable, repeated structure), `FUNCTION_WORDS` for text that passes the quality filters, or a
Zipf-weighted `pseudo_lexicon` mixed with function words for a vocabulary as rich as real text (a 32k BPE fits).
`script_text` draws Chinese, Japanese or Thai letters for the shingle tests. The benchmarks import this file
from `tests/support` (they put `tests/` on sys.path): the corpus is test data, not part of the product.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

TOPIC_WORDS = tuple(
    [
        "the",
        "a",
        "model",
        "data",
        "token",
        "train",
        "loss",
        "step",
        "batch",
        "rank",
        "shard",
        "learn",
        "rate",
        "warm",
        "cosine",
        "decay",
        "gradient",
        "norm",
        "layer",
        "head",
        "attention",
        "block",
        "embed",
        "vector",
        "matrix",
        "python",
        "function",
        "class",
        "module",
        "import",
        "return",
        "value",
        "list",
        "dict",
        "set",
        "file",
        "path",
        "read",
        "write",
        "open",
        "close",
        "error",
        "check",
        "test",
        "assert",
        "equal",
        "run",
        "fast",
        "slow",
        "small",
        "large",
        "first",
        "last",
        "next",
        "over",
        "under",
        "with",
        "from",
        "into",
        "about",
        "river",
        "stone",
        "cloud",
        "light",
        "dark",
        "green",
        "blue",
        "red",
        "moon",
        "sun",
        "star",
        "sea",
        "wind",
        "tree",
    ]
)
FUNCTION_WORDS = tuple(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "it",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "his",
        "they",
        "be",
        "at",
        "one",
        "have",
        "this",
        "from",
        "or",
        "had",
        "by",
        "word",
        "but",
        "what",
        "some",
        "we",
        "can",
        "out",
        "other",
        "were",
        "all",
        "there",
        "when",
        "up",
        "use",
        "your",
        "how",
        "said",
        "an",
        "each",
        "she",
        "which",
        "do",
        "their",
        "time",
        "if",
        "will",
        "way",
        "about",
        "many",
        "then",
        "them",
        "write",
        "would",
        "like",
        "so",
        "these",
        "her",
        "long",
        "make",
        "thing",
        "see",
        "him",
        "two",
        "has",
        "look",
        "more",
        "day",
        "could",
        "go",
        "come",
        "did",
        "number",
        "sound",
        "no",
        "most",
        "people",
        "my",
        "over",
        "know",
        "water",
        "than",
        "call",
        "first",
        "who",
        "may",
        "down",
        "side",
        "been",
        "now",
        "find",
        "any",
        "new",
        "work",
        "part",
        "take",
        "get",
        "place",
        "made",
        "live",
        "where",
        "after",
        "back",
        "little",
        "only",
        "round",
        "man",
        "year",
        "came",
        "show",
        "every",
        "good",
        "me",
        "give",
        "our",
        "under",
        "name",
        "very",
        "through",
        "just",
        "form",
        "sentence",
        "great",
        "think",
        "say",
        "help",
        "low",
        "line",
        "differ",
        "turn",
        "cause",
        "much",
        "mean",
        "before",
        "move",
        "right",
        "boy",
        "old",
        "too",
        "same",
        "tell",
        "does",
        "set",
        "three",
        "want",
        "air",
        "well",
        "also",
        "play",
        "small",
        "end",
        "put",
        "home",
        "read",
        "hand",
        "port",
        "large",
        "spell",
        "add",
        "even",
        "land",
        "here",
        "must",
        "big",
        "high",
        "such",
        "follow",
        "act",
        "why",
        "ask",
        "men",
        "change",
        "went",
        "light",
        "kind",
    ]
)

STORY_WORDS = tuple(
    [
        "river",
        "town",
        "morning",
        "market",
        "bridge",
        "harbor",
        "farmer",
        "basket",
        "window",
        "garden",
        "teacher",
        "letter",
        "summer",
        "winter",
        "story",
        "kitchen",
        "lantern",
        "meadow",
        "orchard",
        "village",
        "painter",
        "station",
        "journey",
        "evening",
        "forest",
        "mountain",
        "candle",
        "blanket",
        "the",
        "of",
        "and",
        "to",
        "with",
        "that",
        "have",
        "be",
        "in",
        "on",
        "at",
        "for",
        "from",
        "by",
    ]
)

Lexicon = tuple[list[str], list[float]]  # pseudo-words and their cumulative Zipf weights


def sentence(rng: random.Random, words: Sequence[str], shortest: int, longest: int, end: str = ".") -> str:
    """`shortest`..`longest` words drawn uniformly from `words`, capitalised, ending in `end`."""
    return " ".join(rng.choice(words) for _ in range(rng.randint(shortest, longest))).capitalize() + end


def pseudo_lexicon(rng: random.Random, size: int = 30000) -> Lexicon:
    """Pronounceable pseudo-words with Zipfian weights: a vocabulary as rich as real text."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(size)})
    rng.shuffle(words)
    cumulative, total = [], 0.0
    for rank in range(1, len(words) + 1):
        total += 1.0 / rank
        cumulative.append(total)
    return words, cumulative


def zipf_sentence(rng: random.Random, lexicon: Lexicon, ends: str = ".") -> str:
    """8-18 words, every other one a function word (so the quality filters keep it), ending in one of `ends`."""
    words, cumulative = lexicon
    content = rng.choices(words, cum_weights=cumulative, k=rng.randint(8, 18))
    text = " ".join(w if i % 2 else rng.choice(FUNCTION_WORDS) for i, w in enumerate(content)).capitalize()
    return text + (rng.choice(ends) if len(ends) > 1 else ends)


def paragraphs(sentences: list[str], per_paragraph: int, separator: str = "\n\n") -> str:
    """Sentences joined by spaces into paragraphs of `per_paragraph`, the paragraphs by `separator`."""
    return separator.join(" ".join(sentences[i : i + per_paragraph]) for i in range(0, len(sentences), per_paragraph))


def prose(
    rng: random.Random,
    words: Sequence[str],
    sentences: int,
    shortest: int,
    longest: int,
    per_paragraph: int,
    separator: str = "\n\n",
) -> str:
    """`sentences` sentences of `shortest`..`longest` words from `words`, in paragraphs of `per_paragraph`."""
    return paragraphs([sentence(rng, words, shortest, longest) for _ in range(sentences)], per_paragraph, separator)


def story(seed: int) -> str:
    """Six lines of three 9-14 word sentences of `STORY_WORDS`: an article the quality filters keep."""
    return prose(random.Random(seed), STORY_WORDS, 18, 9, 14, per_paragraph=3, separator="\n")


def near_copy(text: str) -> str:
    """`text` with its middle word replaced by one no generator draws: a near duplicate (Jaccard well above 0.8)."""
    words = text.split(" ")
    words[len(words) // 2] = "zeppelin"
    return " ".join(words)


def synthetic_docs(n_docs: int, seed: int = 0) -> list[str]:
    """Documents of 2-6 short sentences of `TOPIC_WORDS` (learnable repeated structure, not uniform noise)."""
    rng = random.Random(seed)
    return [" ".join(sentence(rng, TOPIC_WORDS, 4, 12) for _ in range(rng.randint(2, 6))) for _ in range(n_docs)]


def with_copies(
    rng: random.Random, fresh: Callable[[], str], exact: float, near: float, edit: Callable[[str], str]
) -> Iterator[str]:
    """An endless stream: a fraction `exact` are copies of one of the last 500 fresh texts, `near` are edited
    copies (`edit`), the rest are `fresh()`. The planted duplicates give every dedup step work to do."""
    recent: list[str] = []
    while True:
        roll = rng.random()
        if recent and roll < exact:
            yield rng.choice(recent)
        elif recent and roll < exact + near:
            yield edit(rng.choice(recent))
        else:
            text = fresh()
            recent = (recent + [text])[-500:]
            yield text


def write_jsonl(path: Path, texts: Sequence[str], id_prefix: str = "d") -> Path:
    """One `{"id": PREFIXi, "text": ...}` line per text."""
    path.write_text("".join(json.dumps({"id": f"{id_prefix}{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


SCRIPTS = {  # letters to draw from, and the punctuation that ends a clause
    "chinese": (np.arange(0x4E00, 0x4E00 + 3000), "，。、"),
    "japanese": (
        np.r_[np.tile(np.arange(0x3041, 0x3094), 6), np.arange(0x30A1, 0x30F7), np.arange(0x4E00, 0x5600)],
        "、。",
    ),
    "thai": (np.r_[np.arange(0x0E01, 0x0E2F), np.arange(0x0E30, 0x0E3A), np.arange(0x0E40, 0x0E4D)], " "),
}


def script_text(rng: np.random.Generator, script: str, chars: int = 525, punctuate: bool = True) -> str:
    """`chars` letters of `script`, Zipf-weighted like real text, with a clause mark every 13 letters on average."""
    letters, marks = SCRIPTS[script]
    weights = 1.0 / np.arange(1, len(letters) + 1)
    out = [chr(c) for c in rng.choice(letters, chars, p=weights / weights.sum())]
    if punctuate:
        for position in sorted(rng.choice(chars, chars // 13, replace=False), reverse=True):
            out.insert(position, marks[rng.integers(len(marks))])
    return "".join(out)


def plant_edits(rng: np.random.Generator, text: str, script: str, edits: int) -> str:
    """`edits` distinct letters replaced by a different letter of the same script."""
    letters = SCRIPTS[script][0]
    alphabet = set(map(chr, letters))
    chars = list(text)
    for i in rng.choice([i for i, c in enumerate(chars) if c in alphabet], edits, replace=False):
        chars[i] = chr(letters[(np.flatnonzero(letters == ord(chars[i]))[0] + 1 + rng.integers(50)) % len(letters)])
    return "".join(chars)
