"""MinHash signatures of documents' shingles (word or character n-grams), compiled with numba, a batch at a time.

Why this shape:
- Text is folded first (NFKC, lowercase; every character that is not a letter, digit or combining mark becomes a
  separator) so that case, punctuation and spacing differences do not hide near-duplicates. `hash_normalize`
  is that folding as a string.
- A document is cut into tokens, and a shingle is `ngram` consecutive tokens. Tokens are words (runs of
  letters/digits/marks) for scripts written with spaces, and single characters (separators dropped) for scripts
  written without them: Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan, Yi. That is "auto", the default,
  decided letter by letter, never per document: a Chinese page quoting English has English words and Chinese
  characters as tokens. A per-document choice (characters when 1/4 of the letters were Han) split a page and
  its copy that fell on either side of the line into two token kinds that shared no shingle (J 0.000 for a
  pair 0.92 alike); letter by letter, an edit changes only the shingles around it. "words" and "chars" force
  one kind for every letter (`SHINGLE_MODES`).
  In word mode a 500-character Chinese text is a handful of "words" and one edited character changes a whole
  one, so a near-duplicate looks unrelated; character 5-grams keep it at J ~ 0.98 (BENCHMARKS.md).
- All the per-character and per-shingle work is one compiled pass over the batch's code points (numba): the
  Python side makes one `unicodedata.normalize` and one `lower()` call per document and one encode per batch,
  never a call per word or shingle. A token's hash is a multiply-xorshift over its code points finished with
  MurmurHash3's 64-bit finalizer (fmix64); a shingle's 64-bit hash combines its tokens' hashes position by
  position (rotate-xor), with the token count and the mode, and avalanches the result with fmix64.
- Only the top 32 bits of that 64-bit shingle hash reach the permutations (inputs < 2^32 keep a*h exact with
  one split of a, below). Two different shingles of two documents collide with probability 2^-32, so two
  documents of 10^4 shingles each share a spurious one with probability ~0.02: invisible in a Jaccard estimate.
- Documents with fewer than `ngram` tokens get exactly one shingle made of all their tokens (an empty text is the
  one shingle of zero tokens), so every document has a signature and none is silently dropped.
- Permutations are Carter-Wegman universal hashes h -> (a*h + b) mod (2^61 - 1), with (a, b) drawn exactly as
  datasketch's Mersenne-prime ("legacy") MinHash draws them from `np.random.RandomState(seed)`. Unlike
  datasketch, the product a*h is computed exactly (a is split into 31 + 30 bits and 2^61 = 1 mod p folds the high
  part back), so no uint64 overflow distorts the permutation.
- `scheme="affine32"` instead uses datasketch 2.x's default family, a*fmix32(h) + b mod 2^32 with odd a: signatures
  are bit-identical to datasketch's MinHash(scheme="affine32", hashfunc=h >> 32), but it is not min-wise
  independent in theory; datasketch validated it empirically. The default stays the Mersenne-prime family.
- The minimum is taken over full 61-bit permuted values and only then truncated to its low 32 bits for storage
  (uint32, 4 bytes per permutation: 512 bytes per document at num_perm=128). Truncating after the minimum keeps
  the estimator unbiased; two different minima share their low 32 bits with probability 2^-32.
- numba compiles the kernels once per machine (cached beside this file, or in NUMBA_CACHE_DIR). They release
  the GIL, so `workers` threads hash chunks of documents in parallel.
"""

from __future__ import annotations

import functools
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from data_pipeline.executor import workers_for_rank

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_LOW30 = np.uint64((1 << 30) - 1)
_LOW31 = np.uint64((1 << 31) - 1)
_LOW32 = np.uint64((1 << 32) - 1)
SCHEMES = ("mersenne61", "affine32")
SHINGLE_MODES = ("words", "chars", "auto")
_WORDS, _CHARS, _AUTO = 0, 1, 2  # the modes as the kernel reads them
_CHUNK_DOCS = 512
# token classes of code points: separator, letter of a script written with spaces, letter of one written without
_SEPARATOR, _SPACED, _UNSPACED = 0, 1, 2
_UNSPACED_RANGES = (  # Unicode blocks of scripts that do not separate words with spaces (inclusive ranges)
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # ideographic iteration/closing marks, ideographic zero
    (0x3021, 0x303B),  # Hangzhou numerals, more iteration marks
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B-H
)
# Letters, digits and combining marks exist only below 0x40000 and in 0xE0100-0xE01EF (variation selectors);
# tests/unit/test_minhash.py checks this against the running Python's Unicode database.
_WORD_CHAR_SPANS = ((0, 0x40000), (0xE0000, 0xE1000))

# fmix64 / token-hash constants (uint64 scalars so numba keeps all arithmetic in uint64)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_TOKEN_MUL = np.uint64(0x9E3779B97F4A7C15)
_CHAR_MODE_TAG = np.uint64(0x5BD1E9955BD1E995)
_U32, _U33 = np.uint64(32), np.uint64(33)
_S13, _S16, _S30, _S31, _S61 = (np.uint64(n) for n in (13, 16, 30, 31, 61))
_C1, _C2 = np.uint64(0x85EBCA6B), np.uint64(0xC2B2AE35)  # MurmurHash3 fmix32


@functools.cache
def token_classes() -> np.ndarray:
    """uint8 class (_SEPARATOR, _SPACED, _UNSPACED) of every code point; built once per process (~0.3 s)."""
    classes = np.zeros(0x110000, np.uint8)
    for start, stop in _WORD_CHAR_SPANS:
        chars = map(chr, range(start, stop))
        classes[start:stop] = np.fromiter(
            (c.isalnum() or unicodedata.category(c)[0] == "M" for c in chars), bool, stop - start
        )
    for low, high in _UNSPACED_RANGES:
        span = classes[low : high + 1]
        span[span == _SPACED] = _UNSPACED
    return classes


def _fold(text: str) -> str:
    """NFKC, lowercase, NFKC again (lowercasing can unsort combining marks: "İ" -> "i" + U+0307)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


def hash_normalize(text: str) -> str:
    """NFKC, lowercase, everything but letters/digits/marks to spaces, whitespace collapsed: what dedup compares."""
    points = _code_points(_fold(text)).copy()
    points[token_classes()[points] == _SEPARATOR] = ord(" ")
    return " ".join(points.tobytes().decode("utf-32-le", "surrogatepass").split())


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (numpy): a bijection that spreads every input bit over the whole word."""
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(33))
        values = values * _M1
        values = values ^ (values >> np.uint64(33))
        values = values * _M2
        return values ^ (values >> np.uint64(33))


@numba.njit(cache=True)
def _fmix64_scalar(value):
    value ^= value >> _U33
    value *= _M1
    value ^= value >> _U33
    value *= _M2
    return value ^ (value >> _U33)


@numba.njit(cache=True)
def _document_tokens(points, start, stop, classes, mode, tokens):
    """Hash the tokens of points[start:stop] into `tokens`; returns how many.

    A letter continues a word in mode _WORDS, and in mode _AUTO when its script is written with spaces; any
    other letter is a token of its own, and a separator ends a word.
    """
    count = 0
    state = np.uint64(0)
    length = 0
    for i in range(start, stop + 1):
        kind = classes[points[i]] if i < stop else _SEPARATOR
        if kind != _SEPARATOR and (mode == _WORDS or (mode == _AUTO and kind == _SPACED)):
            state = (state ^ np.uint64(points[i])) * _TOKEN_MUL
            state ^= state >> _U32
            length += 1
            continue
        if length:  # a word ends
            tokens[count] = _fmix64_scalar(state ^ np.uint64(length))
            count += 1
            state, length = np.uint64(0), 0
        if kind != _SEPARATOR:  # a letter that is a token of its own
            tokens[count] = _fmix64_scalar(np.uint64(points[i]) ^ _CHAR_MODE_TAG)
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _shingle_kernel(points, offsets, classes, mode, ngram, out, counts):
    """Shingle hashes of every document into `out` (concatenated), their number into counts; returns the total."""
    tokens = np.empty(np.int64(np.max(np.diff(offsets))) + 1, np.uint64)
    total = 0
    for doc in range(len(offsets) - 1):
        n_tokens = _document_tokens(points, offsets[doc], offsets[doc + 1], classes, mode, tokens)
        width = min(n_tokens, ngram)
        tag = np.uint64(width + 1) * _TOKEN_MUL ^ (_CHAR_MODE_TAG if mode == _CHARS else np.uint64(0))
        for first in range(n_tokens - width + 1):
            combined = tag
            for position in range(width):
                rotate = np.uint64((23 * position) % 64)
                token = tokens[first + position]
                combined ^= (token << rotate) | (token >> ((np.uint64(64) - rotate) % np.uint64(64)))
            out[total] = _fmix64_scalar(combined)
            total += 1
        counts[doc] = n_tokens - width + 1
    return total


def _shingle_mode(shingle: str) -> int:
    """The kernel's mode for a dedup.shingle value."""
    if shingle not in SHINGLE_MODES:
        raise ValueError(f"shingle must be one of {', '.join(SHINGLE_MODES)} (dedup.shingle), got {shingle!r}")
    return {"words": _WORDS, "chars": _CHARS, "auto": _AUTO}[shingle]


def shingle_hashes_batch(texts: list[str], ngram: int = 5, shingle: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """All documents' 64-bit shingle hashes concatenated (uint64) and the number of shingles of each document."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1 (dedup.ngram), got {ngram}")
    if not texts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    folded = [_fold(t) for t in texts]
    offsets = np.zeros(len(folded) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, folded), np.int64, len(folded)), out=offsets[1:])
    points = _code_points("".join(folded))
    out = np.empty(len(points) + len(texts), np.uint64)  # a document has at most max(1, characters) shingles
    counts = np.empty(len(texts), np.int64)
    total = _shingle_kernel(points, offsets, token_classes(), _shingle_mode(shingle), ngram, out, counts)
    return out[:total].copy(), counts


def shingle_hashes(text: str, ngram: int = 5, shingle: str = "auto") -> np.ndarray:
    """64-bit hashes (uint64) of one document's shingles (see `shingle_hashes_batch`)."""
    return shingle_hashes_batch([text], ngram, shingle)[0]


@dataclass(frozen=True)
class Permutations:
    """The num_perm hash functions (a, b) of one seed and scheme (see SCHEMES)."""

    a: np.ndarray
    b: np.ndarray
    scheme: str = "mersenne61"

    @classmethod
    def from_seed(cls, num_perm: int, seed: int, scheme: str = "mersenne61") -> Permutations:
        """Draw (a, b) exactly as datasketch does for the matching scheme ("legacy" for mersenne61)."""
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1 (dedup.num_perm), got {num_perm}")
        gen = np.random.RandomState(seed)
        if scheme == "affine32":  # odd a: a bijection of the 32-bit values
            a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
            return cls(a=a, b=gen.randint(0, 1 << 32, num_perm, dtype=np.uint32), scheme=scheme)
        if scheme != "mersenne61":
            raise ValueError(f"MinHash scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        pairs = [
            (gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
            for _ in range(num_perm)
        ]
        a, b = np.array(pairs, dtype=np.uint64).T
        return cls(a=np.ascontiguousarray(a), b=np.ascontiguousarray(b))


@numba.njit(cache=True, nogil=True)
def _mersenne_kernel(hashes, counts, a_low, a_high, b, minima):
    """minima[d, k] = min over document d's shingles h of (a_k * (h >> 32) + b_k) mod (2^61 - 1), exactly.

    a = a_high * 2^31 + a_low with a_low < 2^31, a_high < 2^30, so h*a_low < 2^63 and h*a_high < 2^62 are exact
    in uint64; (h*a_high) * 2^31 = (h*a_high >> 30) * 2^61 + (h*a_high & (2^30-1)) * 2^31 and 2^61 = 1 (mod p).
    The sum of the parts and b stays below 2^64, so one Mersenne fold leaves a representative < 2^61 + 8.
    """
    num_perm = len(b)
    row = 0
    for doc in range(len(counts)):
        best = minima[doc]
        for _ in range(counts[doc]):
            h = hashes[row] >> _U32
            row += 1
            for k in range(num_perm):
                high = h * a_high[k]
                value = h * a_low[k] + (high >> _S30) + ((high & _LOW30) << _S31) + b[k]
                best[k] = min(best[k], (value & MERSENNE_PRIME) + (value >> _S61))


@numba.njit(cache=True, nogil=True)
def _affine32_kernel(hashes, counts, a, b, minima):
    """minima[d, k] = min over shingles of (a_k * fmix32(h >> 32) + b_k) mod 2^32 (datasketch's "affine32")."""
    num_perm = len(b)
    row = 0
    for doc in range(len(counts)):
        best = minima[doc]
        for _ in range(counts[doc]):
            h = hashes[row] >> _U32
            row += 1
            h ^= h >> _S16  # MurmurHash3's 32-bit finalizer, in uint64 with the products masked to 32 bits
            h = (h * _C1) & _LOW32
            h ^= h >> _S13
            h = (h * _C2) & _LOW32
            h ^= h >> _S16
            for k in range(num_perm):
                best[k] = min(best[k], (a[k] * h + b[k]) & _LOW32)


def signatures_from_hashes(hash_lists: list[np.ndarray], perms: Permutations) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of documents given as arrays of 64-bit shingle hashes."""
    counts = np.array([len(h) for h in hash_lists], dtype=np.int64)
    all_hashes = np.concatenate(hash_lists) if hash_lists else np.zeros(0, np.uint64)
    return _signatures(all_hashes, counts, perms)


def _signatures(all_hashes: np.ndarray, counts: np.ndarray, perms: Permutations) -> np.ndarray:
    """Signatures of documents whose shingle hashes are concatenated in `all_hashes`, counts[i] each."""
    if (counts == 0).any():
        raise ValueError("every document needs at least one shingle hash; shingle_hashes() always gives one")
    minima = np.full((len(counts), len(perms.a)), np.iinfo(np.uint64).max, np.uint64)
    hashes = np.ascontiguousarray(all_hashes, np.uint64)
    if perms.scheme == "affine32":
        _affine32_kernel(hashes, counts, perms.a.astype(np.uint64), perms.b.astype(np.uint64), minima)
    else:
        _mersenne_kernel(hashes, counts, perms.a & _LOW31, perms.a >> np.uint64(31), perms.b, minima)
    return (minima & _LOW32).astype(np.uint32)


def _signature_chunk(args: tuple[list[str], int, int, int, str, str]) -> np.ndarray:
    texts, ngram, num_perm, seed, scheme, shingle = args
    perms = Permutations.from_seed(num_perm, seed, scheme)
    return _signatures(*shingle_hashes_batch(texts, ngram, shingle), perms)


def compute_signatures(
    texts: list[str],
    *,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 1,
    workers: int = 0,
    scheme: str = "mersenne61",
    shingle: str = "auto",
) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures; identical for any `workers` (chunks are joined in order)."""
    workers = workers_for_rank(workers)
    Permutations.from_seed(num_perm, seed, scheme)  # reject bad settings before forking
    chunks = [
        (texts[i : i + _CHUNK_DOCS], ngram, num_perm, seed, scheme, shingle) for i in range(0, len(texts), _CHUNK_DOCS)
    ]
    if not chunks:
        _shingle_mode(shingle)  # reject a bad mode here too
        return np.zeros((0, num_perm), np.uint32)
    first = _signature_chunk(chunks[0])  # compiles (or loads) the kernels and builds the tables once
    if workers == 1 or len(chunks) == 1:
        return np.concatenate([first] + [_signature_chunk(c) for c in chunks[1:]])
    # threads: the compiled kernels release the GIL, so chunks run in parallel without fork or pickling (forking
    # an MPI rank is unsafe); the GIL is held only for one normalize/lower call per document
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.concatenate([first, *pool.map(_signature_chunk, chunks[1:])])


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Fraction of equal signature entries (rowwise for 2-D inputs): the MinHash estimate of Jaccard similarity."""
    return np.mean(sig_a == sig_b, axis=-1)
