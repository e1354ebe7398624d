"""The token shard format: the one contract between the corpus pipeline and the trainer.

A shard is an Arrow IPC file with one record batch and two columns:

- `doc_id`  (string): the document's id from the ledger;
- `tokens`  (list<uint16> or list<uint32>): the document's tokens with EOS appended.

The list column's values buffer *is* the document-concatenated token stream and its offsets are the document
index (Megatron's .bin/.idx in one standard file). Memory-mapped, the stream is a zero-copy numpy view.
Schema metadata records dtype, vocab size, EOS id and the tokenizer checksum.

Next to each shard, `<shard>.index.parquet` is its per-document index: one row per document, in shard order, with
`doc_id`, `shard` (the shard's file name), `offset` and `length` (the document's tokens, EOS included, in the
shard's token stream), `source` and `url` (null where the document had none). It traces a trained token back to
its page (decontamination, audits); the trainer never reads it. `manifest.json` lists the shards of each split
with token/doc counts and sha256, and each shard's index with its sha256. `TokenStream` concatenates a
split's shards and returns any token window [i, i+L) in O(log shards) (a binary search over shard boundaries).

This module imports neither torch nor the pipeline stages: both halves import it.
"""

from __future__ import annotations

import functools
import json
import os
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_pipeline.errors import PipelineError
from infra.files import atomic_write, file_sha256, write_text

FORMAT = "arrow-token-shards/v1"
MANIFEST = "manifest.json"
DEFAULT_TARGET_BYTES = 256 * 1024 * 1024
INDEX_SUFFIX = ".index.parquet"
# memory maps a TokenStream keeps at once: the tokenize stage writes shards per kept part (~190k shards at 10B
# documents), and Linux allows 65,530 maps per process (vm.max_map_count) for everything a rank maps
OPEN_SHARDS = 256
INDEX_FIELDS = ("source", "url")  # per-document metadata the index carries besides the id and token range
INDEX_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("shard", pa.string()), ("offset", pa.int64()), ("length", pa.int64()),
     ("source", pa.string()), ("url", pa.string())]
)  # fmt: skip


class ShardError(PipelineError):
    """A shard or manifest is missing, corrupt or inconsistent; the message names the file.

    A PipelineError wherever it is met: `pipeline inspect` and the trainer, `pretrain evaluate` and `plan` (which
    read shards) all report it as one line and exit 2.
    """


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32: halves disk and page-cache for common vocabs."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class ShardInfo:
    """One manifest row. `path` is relative to the dataset directory."""

    path: str
    num_tokens: int
    num_docs: int
    sha256: str
    index: str  # the per-document index file, relative like `path`
    index_sha256: str


def index_path(shard_path: str | os.PathLike) -> Path:
    """The per-document index next to a shard: train-part-00000-00000.arrow -> train-part-00000-00000.index.parquet."""
    shard_path = Path(shard_path)
    return shard_path.with_name(shard_path.stem + INDEX_SUFFIX)


def write_shard(
    path: str | os.PathLike,
    doc_ids: list[str],
    token_lists: list[np.ndarray],
    *,
    vocab_size: int,
    eos_id: int,
    tokenizer_sha256: str,
    doc_metadata: list[dict] | None = None,
) -> ShardInfo:
    """Write one shard and its per-document index (each with `atomic_write`; `doc_metadata[i]` holds document i's
    INDEX_FIELDS, absent ones null) and return its manifest row."""
    path = Path(path)
    dtype = token_dtype(vocab_size)
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int32 if lengths.sum() < 2**31 else np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(token_lists).astype(dtype, copy=False) if token_lists else np.zeros(0, dtype)
    array_cls = pa.LargeListArray if offsets.dtype == np.int64 else pa.ListArray
    tokens = array_cls.from_arrays(pa.array(offsets), pa.array(values))
    metadata = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": str(vocab_size),
        "eos_id": str(eos_id),
        "tokenizer_sha256": tokenizer_sha256,
    }
    batch = pa.record_batch([pa.array(doc_ids, pa.string()), tokens], names=["doc_id", "tokens"])
    batch = batch.replace_schema_metadata(metadata)
    try:  # disk full, quota, I/O error: atomic_write leaves no partial file behind; the error names the shard
        with atomic_write(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        index = write_index(path, doc_ids, offsets, doc_metadata or [{}] * len(doc_ids))
    except OSError as err:
        raise OSError(
            err.errno, f"{path}: cannot write shard ({err.strerror or err}); free space or use another --output"
        ) from err
    return ShardInfo(path.name, int(offsets[-1]), len(doc_ids), file_sha256(path), index.name, file_sha256(index))


def write_index(shard_path: Path, doc_ids: list[str], offsets: np.ndarray, metadata: list[dict]) -> Path:
    """The shard's per-document index (INDEX_SCHEMA), written atomically next to it."""
    offsets = np.asarray(offsets, np.int64)
    columns = {
        "doc_id": doc_ids,
        "shard": [shard_path.name] * len(doc_ids),
        "offset": offsets[:-1],
        "length": np.diff(offsets),
        **{name: [_text_or_none(m.get(name)) for m in metadata] for name in INDEX_FIELDS},
    }
    path = index_path(shard_path)
    with atomic_write(path, "wb") as sink:
        pq.write_table(pa.table(columns, schema=INDEX_SCHEMA), sink)
    return path


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def read_index(data_dir: str | os.PathLike, split: str | None = None) -> pa.Table:
    """Every shard's per-document index of the dataset (or of one split), in manifest order, as one table with
    a `split` column. A document's tokens are `offset` to `offset + length` of its shard's token stream."""
    manifest = read_manifest(data_dir)
    tables = []
    for name, entry in manifest["splits"].items():
        for row in entry["shards"] if split in (None, name) else []:
            if "index" not in row:
                raise ShardError(
                    f"{Path(data_dir) / row['path']}: no per-document index (written by an older pipeline)"
                )
            table = pq.read_table(Path(data_dir) / row["index"], schema=INDEX_SCHEMA)
            tables.append(table.append_column("split", pa.array([name] * len(table), pa.string())))
    return pa.concat_tables(tables) if tables else INDEX_SCHEMA.append(pa.field("split", pa.string())).empty_table()


def find_document(data_dir: str | os.PathLike, doc_id: str) -> dict | None:
    """The index row of one document id (split, shard, offset, length, source, url), or None."""
    import pyarrow.compute as pc

    table = read_index(data_dir)
    rows = table.filter(pc.equal(table["doc_id"], doc_id)).to_pylist()
    return rows[0] if rows else None


def document_tokens(data_dir: str | os.PathLike, row: dict) -> np.ndarray:
    """The tokens (EOS included) an index row points at, read from its shard."""
    shards = read_manifest(data_dir)["splits"][row["split"]]["shards"]
    path = next(Path(data_dir) / s["path"] for s in shards if Path(s["path"]).name == row["shard"])
    with pa.memory_map(str(path), "r") as source:
        values = pa.ipc.open_file(source).get_batch(0).column("tokens").values
        return values.slice(row["offset"], row["length"]).to_numpy(zero_copy_only=False)


class ShardWriter:
    """Accumulates documents of one split and cuts a shard whenever `target_bytes` of tokens are buffered."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str,
        *,
        vocab_size: int,
        eos_id: int,
        tokenizer_sha256: str,
        target_bytes: int = DEFAULT_TARGET_BYTES,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.meta = dict(vocab_size=vocab_size, eos_id=eos_id, tokenizer_sha256=tokenizer_sha256)
        self.itemsize = token_dtype(vocab_size).itemsize
        self.target_tokens = max(1, target_bytes // self.itemsize)
        self.shards: list[ShardInfo] = []
        self._ids: list[str] = []
        self._tokens: list[np.ndarray] = []
        self._metadata: list[dict] = []
        self._buffered = 0

    def add(self, doc_id: str, tokens: np.ndarray, metadata: dict | None = None) -> None:
        """Buffer one document; `metadata` holds its INDEX_FIELDS (source, url) for the shard's index."""
        self._ids.append(doc_id)
        self._tokens.append(tokens)
        self._metadata.append(metadata or {})
        self._buffered += len(tokens)
        if self._buffered >= self.target_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._ids:
            return
        name = f"{self.prefix}-{len(self.shards):05d}.arrow"
        self.shards.append(
            write_shard(self.out_dir / name, self._ids, self._tokens, doc_metadata=self._metadata, **self.meta)
        )
        self._ids, self._tokens, self._metadata, self._buffered = [], [], [], 0

    def close(self) -> list[ShardInfo]:
        self.flush()
        return self.shards


def write_manifest(data_dir: str | os.PathLike, manifest: dict) -> Path:
    """Write manifest.json with `atomic_write`; its presence marks the dataset complete."""
    return write_text(Path(data_dir) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def split_entry(shards: list[ShardInfo], shard_dir: str = "shards") -> dict:
    """The manifest's description of one split; shard paths are relative to the dataset directory."""
    rows = [asdict(s) | {"path": f"{shard_dir}/{s.path}", "index": f"{shard_dir}/{s.index}"} for s in shards]
    return {
        "num_tokens": sum(s.num_tokens for s in shards),
        "num_docs": sum(s.num_docs for s in shards),
        "shards": rows,
    }


def read_manifest(data_dir: str | os.PathLike) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{path}: no manifest; is {data_dir} the output folder of `pipeline run`?")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


class TokenStream:
    """A split's shards as one memory-mapped token stream with O(log shards) windows.

    Every shard is checked when the stream opens (present, readable, the manifest's token count; with
    `verify=True` also hashed against the manifest, seconds per GB), so a file that rotted or was edited after
    writing raises ShardError naming it and is never trained on. Then only the OPEN_SHARDS most recently read
    shards stay mapped: a split may have more shards than a process may have memory maps.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str = "train", *, verify: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(data_dir)
        if split not in self.manifest["splits"]:
            raise ShardError(f"{self.data_dir / MANIFEST}: no split {split!r}; has {list(self.manifest['splits'])}")
        self.split = split
        self.eos_id = int(self.manifest["eos_id"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self._rows = self.manifest["splits"][split]["shards"]
        lengths = [len(self._open(row, verify)) for row in self._rows]  # each mapped once, then released
        self._starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).tolist()
        self.num_tokens = int(self._starts[-1])
        self.shard_tokens = functools.lru_cache(maxsize=OPEN_SHARDS)(self._mapped)

    def _mapped(self, shard: int) -> np.ndarray:
        """Shard `shard`'s tokens, a read-only view of its memory map (cached by `shard_tokens`)."""
        return self._open(self._rows[shard], verify=False)

    def _open(self, row: dict, verify: bool) -> np.ndarray:
        path = self.data_dir / row["path"]
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in the manifest is missing")
        if verify and (actual := file_sha256(path)) != row["sha256"]:
            raise ShardError(f"{path}: checksum mismatch (manifest {row['sha256'][:12]}…, file {actual[:12]}…)")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
            column = reader.get_batch(0).column("tokens")
            values = column.values.to_numpy(zero_copy_only=True)
        except (pa.ArrowInvalid, OSError, IndexError) as err:
            raise ShardError(f"{path}: not a readable token shard ({err})") from err
        if len(values) != row["num_tokens"]:
            raise ShardError(f"{path}: {len(values)} tokens, manifest says {row['num_tokens']}")
        return values

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) of the split's stream; a view unless the window crosses a shard edge."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"window [{start}, {start + length}) outside [0, {self.num_tokens})")
        if length <= 0:  # also covers start == num_tokens, where no shard holds `start`
            return np.zeros(0, token_dtype(self.vocab_size))
        shard = bisect_right(self._starts, start) - 1
        offset = start - self._starts[shard]
        first = self.shard_tokens(shard)[offset : offset + length]
        if len(first) == length:
            return first
        parts, need = [first], length - len(first)
        while need:
            shard += 1
            part = self.shard_tokens(shard)[:need]
            parts.append(part)
            need -= len(part)
        return np.concatenate(parts)

    def num_samples(self, seq_len: int) -> int:
        """Non-overlapping training samples of seq_len+1 tokens (inputs and shifted targets share one token)."""
        return max(0, (self.num_tokens - 1) // seq_len)

    def sample(self, index: int, seq_len: int) -> np.ndarray:
        """Sample `index`: tokens [index*seq_len, index*seq_len + seq_len + 1)."""
        return self.window(index * seq_len, seq_len + 1)
