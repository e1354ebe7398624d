"""MinHash signatures of documents' word n-gram shingles, vectorised over all shingles of many documents.

Why this shape:
- Text is normalised first (`hash_normalize`) so that case, punctuation and spacing differences do not hide
  near-duplicates.
- Each word is hashed once with xxh3_64; the 64-bit hash of an n-gram shingle combines its words' hashes
  position by position (rotate-xor) and avalanches the result with the MurmurHash3 64-bit finalizer. This is a
  64-bit hash of the ordered n-gram computed with numpy instead of one Python call per shingle.
- Documents with fewer than `ngram` words get exactly one shingle made of all their words (an empty text is the
  one shingle of zero words), so every document has a signature and none is silently dropped.
- Permutations are Carter-Wegman universal hashes h -> (a*h + b) mod (2^61 - 1), with (a, b) drawn exactly as
  datasketch's Mersenne-prime ("legacy") MinHash draws them from `np.random.RandomState(seed)`. The input h is
  the top 32 bits of the shingle hash. Unlike datasketch, the product a*h is computed exactly (a is split into
  31 + 30 bits and 2^61 = 1 mod p folds the high part back), so no uint64 overflow distorts the permutation.
- `scheme="affine32"` instead uses datasketch 2.x's default family, a*fmix32(h) + b mod 2^32 with odd a: signatures
  are bit-identical to datasketch's MinHash(scheme="affine32", hashfunc=h >> 32) and about twice as fast (two
  uint32 operations per shingle and permutation instead of eleven uint64 ones), but it is not min-wise
  independent in theory; datasketch validated it empirically. The default stays the Mersenne-prime family.
- The minimum is taken over full 61-bit permuted values and only then truncated to its low 32 bits for storage
  (uint32, 4 bytes per permutation: 512 bytes per document at num_perm=128). Truncating after the minimum keeps
  the estimator unbiased; two different minima share their low 32 bits with probability 2^-32.
- Work is done in blocks of `block_rows` shingles x num_perm so the temporaries (< 0.5 MB) stay in the CPU's
  L2 cache; the per-document minimum is a `np.minimum.reduceat` over each block's document segments.
"""

from __future__ import annotations

import os
import re
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain
from multiprocessing import get_context

import numpy as np
import xxhash

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_LOW30 = np.uint64((1 << 30) - 1)
_LOW31 = np.uint64((1 << 31) - 1)
_LOW32 = np.uint64((1 << 32) - 1)
SCHEMES = ("mersenne61", "affine32")
_CHUNK_DOCS = 512
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")
_ASCII_WORD_BYTES = bytes(c if chr(c).isalnum() and c < 128 else 32 for c in range(256))


def hash_normalize(text: str) -> str:
    """NFKC, lowercase, punctuation/symbols to spaces, whitespace collapsed: what near-dedup compares."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the whole word."""
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))


def _rotl(values: np.ndarray, bits: int) -> np.ndarray:
    bits %= 64
    if bits == 0:
        return values
    return (values << np.uint64(bits)) | (values >> np.uint64(64 - bits))


def _normalized_words(text: str) -> list[bytes]:
    """The words of hash_normalize(text) as UTF-8 bytes; ASCII text takes a translate() fast path (same result)."""
    if text.isascii():  # NFKC is the identity on ASCII; every non-alphanumeric byte becomes a separator
        words = text.lower().encode("ascii").translate(_ASCII_WORD_BYTES).split()
    else:
        words = hash_normalize(text).encode("utf-8").split()
    return words or [b""]


def _shingle_starts(word_counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first word position, width) of every shingle of every document, and shingles per document."""
    widths = np.minimum(word_counts, ngram)
    counts = word_counts - widths + 1
    first_shingle = np.cumsum(counts) - counts
    first_word = np.cumsum(word_counts) - word_counts
    rank_in_doc = np.arange(int(counts.sum())) - np.repeat(first_shingle, counts)
    return np.repeat(first_word, counts) + rank_in_doc, np.repeat(widths, counts), counts


def shingle_hashes_batch(texts: list[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """All documents' shingle hashes concatenated (uint64) and the number of shingles of each document."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1 (dedup.ngram), got {ngram}")
    word_lists = [_normalized_words(t) for t in texts]
    word_counts = np.fromiter(map(len, word_lists), np.int64, len(word_lists))
    total = int(word_counts.sum())
    word_hashes = np.zeros(total + ngram, np.uint64)  # zero padding: reads past a short doc's end are masked
    word_hashes[:total] = np.fromiter(map(xxhash.xxh3_64_intdigest, chain.from_iterable(word_lists)), np.uint64, total)
    starts, widths, counts = _shingle_starts(word_counts, ngram)
    combined = np.zeros(len(starts), np.uint64)
    for position in range(ngram):
        part = _rotl(word_hashes[starts + position], 23 * position)
        combined ^= part if position == 0 else np.where(position < widths, part, np.uint64(0))
    with np.errstate(over="ignore"):
        return _fmix64(combined ^ widths.astype(np.uint64)), counts


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """64-bit hashes (uint64) of the word n-grams of `hash_normalize(text)`; one shingle if it has < ngram words."""
    return shingle_hashes_batch([text], ngram)[0]


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


def _mod_mersenne(values: np.ndarray, scratch: np.ndarray) -> None:
    """values := a representative < 2^61 + 8 of values mod 2^61-1, in place (2^61 = 1 mod p)."""
    np.right_shift(values, np.uint64(61), out=scratch)
    np.bitwise_and(values, MERSENNE_PRIME, out=values)
    np.add(values, scratch, out=values)


class _PermuteKernel:
    """(a*h + b) mod p for a block of 32-bit inputs h and every permutation, with preallocated buffers.

    a = a_high * 2^31 + a_low with a_low < 2^31, a_high < 2^30, so h*a_low < 2^63 and h*a_high < 2^62 are exact
    in uint64; (h*a_high) * 2^31 is folded with 2^61 = 1 (mod p). The sum of the three parts stays below 2^64,
    so one Mersenne reduction at the end suffices: 11 array operations per (shingle, permutation).
    """

    block_rows = 160  # three uint64 buffers of 160 x 128: 480 KB, inside a 1 MB L2

    def __init__(self, perms: Permutations) -> None:
        self.a_low, self.a_high, self.b = perms.a & _LOW31, perms.a >> np.uint64(31), perms.b
        shape = (self.block_rows, len(perms.a))
        self._low, self._high, self._scratch = (np.empty(shape, np.uint64) for _ in range(3))

    def __call__(self, h32: np.ndarray) -> np.ndarray:
        rows = len(h32)
        low, high, scratch = self._low[:rows], self._high[:rows], self._scratch[:rows]
        column = h32[:, None]
        np.multiply(column, self.a_low, out=low)  # < 2^63, exact
        np.multiply(column, self.a_high, out=high)  # < 2^62, exact
        # high * 2^31 = (high >> 30) * 2^61 + (high & (2^30-1)) * 2^31 = (high >> 30) + ((high & (2^30-1)) << 31)
        np.right_shift(high, np.uint64(30), out=scratch)
        np.add(low, scratch, out=low)
        np.bitwise_and(high, _LOW30, out=high)
        np.left_shift(high, np.uint64(31), out=high)
        np.add(low, high, out=low)
        np.add(low, self.b, out=low)  # < 2^63 + 2^32 + 2 * 2^61 < 2^64: no overflow
        _mod_mersenne(low, scratch)
        return low


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's pre-mix for its affine schemes)."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


class _Affine32Kernel:
    """a*fmix32(h) + b mod 2^32 (datasketch's "affine32"): two uint32 operations per (shingle, permutation)."""

    block_rows = 640  # one uint32 buffer of 640 x 128: 320 KB

    def __init__(self, perms: Permutations) -> None:
        self.a, self.b = perms.a, perms.b
        self._values = np.empty((self.block_rows, len(perms.a)), np.uint32)

    def __call__(self, h32: np.ndarray) -> np.ndarray:
        values = self._values[: len(h32)]
        np.multiply(_fmix32(h32.astype(np.uint32))[:, None], self.a, out=values)
        np.add(values, self.b, out=values)
        return values


def _fold_block(
    kernel: _PermuteKernel | _Affine32Kernel, h32: np.ndarray, segments: np.ndarray, first_doc: int, minima: np.ndarray
) -> None:
    """Fold one block of shingle rows into the running minima of the consecutive documents it covers.

    `segments` are the block-relative rows where a document starts (0 first); document first_doc + i owns
    segment i, so the update is a slice, not a scatter.
    """
    block_mins = np.minimum.reduceat(kernel(h32), segments, axis=0)
    target = minima[first_doc : first_doc + len(segments)]
    np.minimum(target, block_mins, out=target)


def _block_segments(counts: np.ndarray, block_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every block: the document-start rows inside it (globally), where its list begins, and its first doc."""
    doc_starts = np.cumsum(counts) - counts
    total = int(counts.sum())
    block_starts = np.arange(0, total, block_rows)
    cuts = np.union1d(doc_starts, block_starts)  # every segment start: a document or a block begins
    first_cut_of_block = np.searchsorted(cuts, block_starts)
    first_doc_of_block = np.searchsorted(doc_starts, block_starts, side="right") - 1
    return cuts, first_cut_of_block, first_doc_of_block


def signatures_from_hashes(hash_lists: list[np.ndarray], perms: Permutations) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of documents given as arrays of 64-bit shingle hashes."""
    counts = np.array([len(h) for h in hash_lists], dtype=np.int64)
    all_hashes = np.concatenate(hash_lists) if hash_lists else np.zeros(0, np.uint64)
    return _signatures(all_hashes, counts, perms)


def _signatures(all_hashes: np.ndarray, counts: np.ndarray, perms: Permutations) -> np.ndarray:
    """Signatures of documents whose shingle hashes are concatenated in `all_hashes`, counts[i] each."""
    if (counts == 0).any():
        raise ValueError("every document needs at least one shingle hash; shingle_hashes() always gives one")
    all_h32 = all_hashes >> np.uint64(32)
    dtype = np.uint32 if perms.scheme == "affine32" else np.uint64
    minima = np.full((len(counts), len(perms.a)), np.iinfo(dtype).max, dtype)
    kernel = _Affine32Kernel(perms) if perms.scheme == "affine32" else _PermuteKernel(perms)
    rows = kernel.block_rows
    cuts, first_cut, first_doc = _block_segments(counts, rows)
    bounds = np.r_[first_cut, len(cuts)].tolist()
    for block, start in enumerate(range(0, len(all_h32), rows)):
        segments = cuts[bounds[block] : bounds[block + 1]] - start
        _fold_block(kernel, all_h32[start : start + rows], segments, int(first_doc[block]), minima)
    return minima if dtype == np.uint32 else (minima & _LOW32).astype(np.uint32)


def _signature_chunk(args: tuple[list[str], int, int, int, str]) -> np.ndarray:
    texts, ngram, num_perm, seed, scheme = args
    perms = Permutations.from_seed(num_perm, seed, scheme)
    return _signatures(*shingle_hashes_batch(texts, ngram), perms)


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
    if workers == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return workers


def compute_signatures(
    texts: list[str],
    *,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 1,
    workers: int = 0,
    scheme: str = "mersenne61",
) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures; identical for any `workers` (chunks are joined in order)."""
    workers = resolve_workers(workers)
    Permutations.from_seed(num_perm, seed, scheme)  # reject bad settings before forking
    chunks = [(texts[i : i + _CHUNK_DOCS], ngram, num_perm, seed, scheme) for i in range(0, len(texts), _CHUNK_DOCS)]
    if not chunks:
        return np.zeros((0, num_perm), np.uint32)
    if workers == 1 or len(chunks) == 1:
        return np.concatenate([_signature_chunk(c) for c in chunks])
    # fork: workers inherit the imported modules; chunks travel pickled, signatures come back as arrays
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=get_context("fork")) as pool:
        return np.concatenate(list(pool.map(_signature_chunk, chunks)))


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Fraction of equal signature entries (rowwise for 2-D inputs): the MinHash estimate of Jaccard similarity."""
    return np.mean(sig_a == sig_b, axis=-1)
