"""The per-document steps of the dedup stage, each a small unit with one contract, and a batch of them.

    quality filter   document -> (reason, value) | None    (URL block list, language, data_pipeline/filters.py)
    exact key        texts -> (n, 2) uint64 xxh3_128       (data_pipeline/dedup/exact.py)
    MinHash          texts -> (n, num_perm) uint32         (data_pipeline/dedup/minhash.py)

Reading, HTML extraction and NFC normalisation are the readers' step (data_pipeline/tasks.py `read_task`).
`scan_batch` runs the steps over one batch of documents: language identification and the filters for each,
the exact key and the signature only for the texts the filters keep. It is what
a local worker process executes (data_pipeline/executor.py feeds batches in order, a bounded number in flight);
it knows nothing of files, ranks or pools, so the same function runs inline, in a pool, or on any rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipeline import language
from data_pipeline.config import DedupConfig, FiltersConfig
from data_pipeline.dedup import minhash
from data_pipeline.dedup.exact import exact_text_hashes
from data_pipeline.documents import Document
from data_pipeline.filters import UrlBlocklist, drop_reason, language_drop


class QualityFilter:
    """The recipe's filters: why a document is dropped (ledger reason and measured value), or None.

    In order: the URL block list (value 1.0), the language list (value: the label's score), then the quality
    rules of the document's language.
    """

    def __init__(self, cfg: FiltersConfig) -> None:
        self.cfg = cfg
        self.blocklist = UrlBlocklist.from_file(cfg.url_blocklist) if cfg.url_blocklist else None

    def verdict(self, doc: Document, identified: tuple[str, float] | None = None) -> tuple[str, float] | None:
        """`identified`: the text's (language, score) when the caller has it already."""
        url = doc.meta.get("url")
        if self.blocklist and isinstance(url, str) and self.blocklist.blocks(url):
            return "filter:url_blocklist", 1.0
        label, score = identified or language.identify(doc.text)
        return language_drop(label, score, self.cfg) or drop_reason(doc.text, self.cfg, label)


class ExactKey:
    """xxh3_128 of the text as read: equal keys are byte-identical texts."""

    def keys(self, texts: list[str]) -> np.ndarray:
        return exact_text_hashes(texts)


class Signature:
    """MinHash signatures, one process (the executor parallelises over batches, not inside one)."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg

    def signatures(self, texts: list[str]) -> np.ndarray:
        cfg = self.cfg
        return minhash.compute_signatures(
            texts,
            ngram=cfg.ngram,
            num_perm=cfg.num_perm,
            seed=cfg.seed,
            workers=1,
            scheme=cfg.scheme,
            shingle=cfg.shingle,
        )


@dataclass
class ScannedBatch:
    """What the steps found for one batch: per text its filter verdict; per kept text its key and signature."""

    verdicts: list[tuple[str, float] | None]
    languages: list[tuple[str, float]]  # per text (label, score): identified once, here, for the filters and kept/
    keys: np.ndarray  # (kept, 2) uint64
    signatures: np.ndarray  # (kept, num_perm) uint32; (kept, 0) when near dedup is off
    lengths: np.ndarray  # (kept,) int64 characters: what dedup.keep="longest" ranks by


class Steps:
    """The recipe's steps, built once per process."""

    def __init__(self, filters: FiltersConfig, dedup: DedupConfig) -> None:
        self.filter = QualityFilter(filters) if filters.enabled else None
        self.exact = ExactKey()
        self.signature = Signature(dedup) if dedup.near else None
        self.num_perm = dedup.num_perm

    def scan(self, docs: list[Document]) -> ScannedBatch:
        languages = [language.identify(d.text) for d in docs]
        verdicts = [self.filter.verdict(d, lang) for d, lang in zip(docs, languages, strict=True)] if self.filter \
            else [None] * len(docs)  # fmt: skip
        kept = [d.text for d, v in zip(docs, verdicts, strict=True) if v is None]
        signatures = self.signature.signatures(kept) if self.signature else np.zeros((len(kept), 0), np.uint32)
        return ScannedBatch(
            verdicts=verdicts,
            languages=languages,
            keys=self.exact.keys(kept).reshape(-1, 2),
            signatures=signatures.reshape(len(kept), self.num_perm if self.signature else 0),
            lengths=np.fromiter((len(t) for t in kept), np.int64, len(kept)),
        )


_STEPS: Steps | None = None


def init_steps(filters: FiltersConfig, dedup: DedupConfig) -> None:
    """Pool initializer (and the inline case): build the steps once in this process."""
    global _STEPS
    _STEPS = Steps(filters, dedup)


def scan_batch(docs: list[Document]) -> ScannedBatch:
    """The unit of work a local worker executes: the steps over one batch of documents."""
    assert _STEPS is not None, "init_steps must run first in this process"
    return _STEPS.scan(docs)
