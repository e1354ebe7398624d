"""The tokenize stage, the last of `pipeline run` (stages/run.py): train SentencePiece on kept/ (or adopt an existing
tokenizer, `tokenizer.from`), encode the kept documents into Arrow token shards, write manifest.json.

On N ranks (mpiexec/srun) rank 0 lists kept/ and stats each part once, and the ranks digest equal shares
(`identify_kept_parts`), so no other rank touches a part's metadata. Rank 0 trains the tokenizer on the kept parts
in part order, so the model does not depend on N. Above the trainer's parse budget (tokenizer.document_fraction)
the ranks first draw the hashed sample from their own parts in parallel, and rank 0 reads only the samples
(bounded in total), never the whole corpus.

The parts are dealt to ranks by bytes, largest first onto the least loaded rank (`deal_parts`, the scan's
`assign_tasks`): max/mean load 1.0014 on 2,048 ranks for the parts a scan of 18,000 log-normal files leaves, where
dealing by count gave 1.67 (tests/unit/test_tokenize_parts.py). Each part is encoded into its own shards
(`train-part-00012-00000.arrow`) behind its own marker (`.stages/tokenize-part-00012.json`: the part's size and digest, the tokenizer's sha256, the shard
settings), so a rerun at any N (killed at 2 ranks, resumed on 3) skips the finished parts whichever rank made
them. Rank 0 gathers the shard rows and lists them in part order: concatenating the kept parts in part order is
the global document order, so the manifest, the shards and the train and validation token streams are the same
for any N and any history of interruptions.

Failures end the job: the short root-only steps (tokenizer training, the manifest) share their outcome with
every rank, which all raise with rank 0's message; an error while a rank encodes its own share is printed by
that rank with its rank number and aborts the whole job (executor.job_failed), so no rank waits for it. The
manifest is written last and a stale one is removed first, so a dataset with a manifest.json is always complete.

A complete dataset is never rewritten with other tokenizer or shard settings: training runs read its shards and
token ids, so a rerun whose settings differ from the manifest's recipe is refused, naming each changed key (as
the dedup stage refuses a changed recipe). Settings that do not change a byte of output (encode threads) are free.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import xxhash

from data_pipeline import markers
from data_pipeline.comm import Comm, on_root
from data_pipeline.config import PipelineConfig, ShardsConfig, TokenizerConfig
from data_pipeline.executor import workers_for_rank
from data_pipeline.progress import StageProgress, stage_progress, summary
from data_pipeline.shards import (
    FORMAT,
    INDEX_FIELDS,
    INDEX_SUFFIX,
    MANIFEST,
    ShardInfo,
    ShardWriter,
    split_entry,
    token_dtype,
    write_manifest,
)
from data_pipeline.stages.execution import identify_inputs, run_once, timed
from data_pipeline.stages.outputs import write_json_atomic
from data_pipeline.tasks import assign_tasks
from data_pipeline.tokenizer import (
    INFO_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    VOCAB_FILE,
    HFTokenizer,
    adopt_tokenizer,
    iter_documents,
    kept_files,
    load_tokenizer,
    sample_documents,
    sample_fraction,
    train_tokenizer,
)
from infra.files import file_sha256

SHARD_DIR = "shards"
SAMPLE_DIR = "tokenizer/sample"
SPLITS = ("train", "validation")
SHARD_FILES = (("path", "sha256"), ("index", "index_sha256"))  # a manifest row's files and their hashes
ROWS_SUFFIX = ".rows.json"  # a kept part's shard rows, next to its shards
ENCODE_BATCH_BYTES = 4 << 20


def is_validation(doc_id: str, fraction: float) -> bool:
    """Deterministic split by a hash of the document id: the same doc lands in the same split on any N."""
    return xxhash.xxh64_intdigest(doc_id.encode("utf-8")) < fraction * 2.0**64


def run_tokenize_stage(comm: Comm, output_dir: Path, recipe: PipelineConfig, quiet: bool = True) -> dict:
    """Tokenizer → shards → manifest for the kept/ folder under output_dir; returns counts and timings.

    Collective: the settings check, the kept parts' identities, the parallel sample, the tokenizer's outcome,
    the gather of shard rows and the manifest's outcome (an error while a rank encodes aborts the job).
    """
    output_dir = Path(output_dir)
    quiet = quiet or comm.rank != 0
    on_root(comm, "checking the dataset's settings", lambda: refuse_changed_settings(output_dir, recipe))
    if comm.rank == 0:
        (output_dir / MANIFEST).unlink(missing_ok=True)
    timings: dict[str, float] = {}
    kept = identify_kept_parts(comm, output_dir)
    mine = {part: kept[part] for part in deal_parts({p: d["size"] for p, d in kept.items()}, comm.size)[comm.rank]}
    tokenizer_identity = markers.stage_identity("tokenizer", tokenizer_settings(recipe.tokenizer), kept)
    with timed(timings, "tokenizer"):
        reused = on_root(comm, "checking the tokenizer", lambda: _tokenizer_intact(output_dir, tokenizer_identity))
        if not reused and not recipe.tokenizer.from_dir:
            _sample_in_parallel(comm, output_dir, recipe.tokenizer, kept, list(mine))
        info = on_root(
            comm,
            "tokenizer training",
            lambda: _train_or_reuse_tokenizer(output_dir, recipe.tokenizer, tokenizer_identity),
        )
    with timed(timings, "tokenize"):
        rows = _tokenize_rank(output_dir, recipe.shards, info, mine, quiet)  # an error here aborts the job
        gathered = comm.gather(rows, root=0)
    stats = on_root(
        comm,
        "manifest",
        lambda: _write_dataset_manifest(output_dir, _in_part_order(kept, gathered), info, recipe, timings),
    )
    summary(
        f"tokenize: {stats['train_num_docs']} train / {stats['validation_num_docs']} validation docs, "
        f"{stats['train_num_tokens']} / {stats['validation_num_tokens']} tokens; tokenizer {timings['tokenizer']:.1f} s, "
        f"encoding {timings['tokenize']:.1f} s -> {output_dir / MANIFEST}",
        quiet,
    )
    return stats | {"timings_s": timings}


# Settings that do not change the tokenizer, the shards or the manifest: free to change on a rerun.
OUTPUT_NEUTRAL = {("shards", "encode_threads")}


def changed_settings(recorded: dict, recipe: PipelineConfig) -> list[str]:
    """`section.key: old -> new` for every tokenizer/shards setting that differs from the recorded recipe."""
    changes = []
    for section in ("tokenizer", "shards"):
        old, new = recorded.get(section, {}), dataclasses.asdict(getattr(recipe, section))
        for key, value in new.items():
            if (section, key) not in OUTPUT_NEUTRAL and key in old and old[key] != value:
                changes.append(f"{section}.{key}: {old[key]!r} -> {value!r}")
    return changes


def refuse_changed_settings(output_dir: Path, recipe: PipelineConfig) -> None:
    """Raise StageMismatch when output_dir holds a complete dataset made with other tokenizer or shard settings."""
    path = output_dir / MANIFEST
    if not path.is_file():
        return  # nothing complete to protect: an earlier attempt stopped before its manifest
    changes = changed_settings(json.loads(path.read_text()).get("recipe") or {}, recipe)
    if changes:
        raise markers.StageMismatch(
            f"{output_dir} was tokenized with other settings ({'; '.join(changes)}); rewriting its tokenizer and "
            f"shards would break training runs that read them; use a new --output folder, or delete {path} "
            "to retokenize this folder in place"
        )


def _tokenizer_intact(output_dir: Path, identity: dict) -> bool:
    """The tokenizer's marker records these kept parts and settings, and its files are intact."""
    return markers.task_outputs(output_dir, "tokenizer", identity) is not None


def tokenizer_settings(settings: TokenizerConfig) -> dict:
    """The tokenizer's identity: its settings, and with `tokenizer.from` the adopted files' contents, so a
    tokenizer replaced in that folder is adopted again rather than the old copy reused."""
    identity = dataclasses.asdict(settings)
    if settings.from_dir:
        source = Path(settings.from_dir)
        identity["from_files"] = {p.name: file_sha256(p) for p in sorted(source.glob("*")) if p.is_file()}
    return identity


def _train_or_reuse_tokenizer(output_dir: Path, settings: TokenizerConfig, identity: dict) -> dict:
    """Train or adopt (`tokenizer.from`) the tokenizer (rank 0 only), or reuse a completed, unchanged one (a
    marker from other kept parts means retrain, not error: upstream stages of the same run rewrote kept/)."""
    folder = output_dir / TOKENIZER_DIR
    make = _adopt if settings.from_dir else _train
    run_once(output_dir, "tokenizer", identity, lambda: make(output_dir, settings))
    return json.loads((folder / INFO_FILE).read_text())


def _adopt(output_dir: Path, settings: TokenizerConfig) -> dict[str, str]:
    """Copy the existing tokenizer of `tokenizer.from` into the dataset; returns the outputs."""
    info = adopt_tokenizer(settings.from_dir, output_dir)
    return {
        info["path"]: info["sha256"],
        f"{TOKENIZER_DIR}/{INFO_FILE}": file_sha256(output_dir / TOKENIZER_DIR / INFO_FILE),
    }


def _train(output_dir: Path, settings: TokenizerConfig) -> dict[str, str]:
    """Train on the ranks' sample when they drew one (_sample_in_parallel), else on kept/; returns the outputs."""
    inputs = kept_files(output_dir)
    sampled = output_dir / SAMPLE_DIR
    if sampled.is_dir():
        info = train_tokenizer([sampled / p.name for p in inputs], output_dir, settings, fraction=1.0)
        shutil.rmtree(sampled)
    else:  # under the parse budget (_sample_in_parallel drew no sample): every document, no stat of every part
        info = train_tokenizer(inputs, output_dir, settings, fraction=1.0)
    folder = output_dir / TOKENIZER_DIR
    return {
        f"{TOKENIZER_DIR}/{MODEL_FILE}": info["sha256"],
        **{f"{TOKENIZER_DIR}/{name}": file_sha256(folder / name) for name in (VOCAB_FILE, INFO_FILE)},
    }


def _sample_in_parallel(
    comm: Comm, output_dir: Path, settings: TokenizerConfig, kept: dict[str, dict], mine: list[str]
) -> None:
    """Above the parse budget, every rank draws the hashed training sample from its own kept parts (no serial
    scan of the corpus on rank 0); rank 0 then trains on the samples, the same documents in the same order.

    Collective: a barrier (the old sample is gone), and one more when a sample is drawn (every rank's is written).
    """
    if comm.rank == 0:
        shutil.rmtree(output_dir / SAMPLE_DIR, ignore_errors=True)  # of a killed run: drawn again, or not used
    comm.barrier()
    fraction = sample_fraction(sum(d["size"] for d in kept.values()), settings.input_sentence_size)
    if fraction >= 1.0:
        return
    sample_documents([output_dir / p for p in mine], fraction, output_dir / SAMPLE_DIR)
    comm.barrier()


def identify_kept_parts(comm: Comm, output_dir: Path) -> dict[str, dict]:
    """{kept part inside output_dir: its size and digest} on every rank, in part order (collective).

    Rank 0 lists kept/ and stats each part once; the ranks digest equal shares (identify_inputs): one stat per
    part in all, never one per part per rank. Keyed inside the folder: the identity must not depend on where the
    folder lies (an output URL's staging folder on another machine, a moved folder).
    """
    listed = on_root(comm, "listing kept/", lambda: [str(p) for p in kept_files(output_dir)])
    found = identify_inputs(comm, output_dir, listed)
    return {str(Path(p).relative_to(output_dir)): digest for p, digest in found.items()}


def deal_parts(sizes: dict[str, int], world_size: int) -> list[list[str]]:
    """Each rank's kept parts, dealt by bytes: largest first onto the least loaded rank (the scan's assign_tasks),
    each rank's list in part order. No rank needs contiguous parts: the manifest lists shards in part order."""
    shares: list[list[str]] = [[] for _ in range(world_size)]
    for part, owner in zip(sizes, assign_tasks(list(sizes.values()), world_size), strict=True):
        shares[owner].append(part)
    return shares


def _tokenize_rank(
    output_dir: Path, settings: ShardsConfig, info: dict, mine: dict[str, dict], quiet: bool
) -> dict[str, dict]:
    """Encode each of this rank's kept parts into its own shards, reusing a part whose marker is intact; returns
    {part: {split: [ShardInfo dict]}}."""
    neutral = {key for section, key in OUTPUT_NEUTRAL if section == "shards"}
    config = {k: v for k, v in dataclasses.asdict(settings).items() if k not in neutral}
    config |= {"tokenizer_sha256": info["sha256"]}
    processor = functools.cache(lambda: load_tokenizer(output_dir)[0])  # loaded only when a part is encoded
    rows = {}
    with stage_progress("tokenize", sum(d["size"] for d in mine.values()), quiet) as bar:

        def encode(part: Path) -> dict:
            return encode_to_shards(processor(), info, part, output_dir / SHARD_DIR, settings, bar)

        for part, digest in mine.items():
            identity = markers.stage_identity(part_stage(part), config, {part: digest})
            rows[part] = _tokenize_part(output_dir, part, identity, encode)
    return rows


def part_stage(part: str) -> str:
    """The marker name of a kept part's tokenization: tokenize-part-00012 for kept/part-00012.jsonl."""
    return f"tokenize-{Path(part).stem}"


def part_rows_file(part: str) -> str:
    """Where a kept part's shard rows are kept (inside the dataset): shards/part-00012.rows.json."""
    return f"{SHARD_DIR}/{Path(part).stem}{ROWS_SUFFIX}"


def _tokenize_part(output_dir: Path, part: str, identity: dict, encode: Callable[[Path], dict]) -> dict:
    """One kept part's shard rows: encoded now, or those of an earlier run (at any N) whose marker is intact."""
    rows_path = output_dir / part_rows_file(part)

    def produce() -> dict[str, str]:
        rows = encode(output_dir / part)
        shards = {
            f"{SHARD_DIR}/{r[name]}": r[sha] for split in SPLITS for r in rows[split] for name, sha in SHARD_FILES
        }
        return {part_rows_file(part): write_json_atomic(rows_path, rows), **shards}

    run_once(output_dir, part_stage(part), identity, produce)
    return json.loads(rows_path.read_text())


def encode_to_shards(
    processor: spm.SentencePieceProcessor | HFTokenizer,
    info: dict,
    part: Path,
    shard_dir: Path,
    settings: ShardsConfig,
    bar: StageProgress,
) -> dict:
    """Encode a kept part's documents (EOS appended) into one ShardWriter per split, named after the part
    (train-part-00012-00000.arrow: a rewrite of the part replaces them); returns {split: [ShardInfo dict]}."""
    meta = dict(vocab_size=info["vocab_size"], eos_id=info["eos_id"], tokenizer_sha256=info["sha256"])
    writers = {
        s: ShardWriter(shard_dir, f"{s}-{part.stem}", target_bytes=settings.target_bytes, **meta) for s in SPLITS
    }
    threads = workers_for_rank(settings.encode_threads)  # the output never depends on it
    dtype = token_dtype(info["vocab_size"])
    for ids, texts, metadata, nbytes in _batches(part):
        encoded = encode_batch(processor, texts, info["eos_id"], dtype, threads)
        for doc_id, tokens, meta in zip(ids, encoded, metadata, strict=True):
            split = "validation" if is_validation(doc_id, settings.validation_fraction) else "train"
            writers[split].add(doc_id, tokens, meta)
        bar.update(len(ids), nbytes)
    return {split: [dataclasses.asdict(s) for s in writer.close()] for split, writer in writers.items()}


def encode_batch(
    processor: spm.SentencePieceProcessor | HFTokenizer, texts: list[str], eos_id: int, dtype: np.dtype, threads: int
) -> list[np.ndarray]:
    """The tokenizer's threaded batch encode, each document as a token array with EOS appended."""
    out = []
    for ids in processor.encode(texts, num_threads=threads):
        tokens = np.empty(len(ids) + 1, dtype=dtype)
        tokens[:-1] = ids
        tokens[-1] = eos_id
        out.append(tokens)
    return out


def _batches(part: Path) -> Iterator[tuple[list[str], list[str], list[dict], int]]:
    """(ids, texts, index metadata, bytes) batches of about ENCODE_BATCH_BYTES of text: big enough to keep all
    threads busy. A kept document without a source or url (older outputs, inputs without them) gets null."""
    ids, texts, metadata, size = [], [], [], 0
    for doc, nbytes in iter_documents([part], fields=("id", "text"), optional=INDEX_FIELDS):
        ids.append(str(doc["id"]))
        texts.append(doc["text"])
        metadata.append({name: doc[name] for name in INDEX_FIELDS})
        size += nbytes
        if size >= ENCODE_BATCH_BYTES:
            yield ids, texts, metadata, size
            ids, texts, metadata, size = [], [], [], 0
    if ids:
        yield ids, texts, metadata, size


def _in_part_order(kept: dict[str, dict], per_rank: list[dict[str, dict]]) -> dict[str, dict]:
    """Rank 0: every part's shard rows from the ranks' {part: rows}, in part order (= document order)."""
    merged = {part: rows for rank_rows in per_rank for part, rows in rank_rows.items()}
    return {part: merged[part] for part in kept}


def _write_dataset_manifest(
    output_dir: Path, per_part: dict[str, dict], info: dict, recipe: PipelineConfig, timings: dict
) -> dict:
    """Rank 0: one manifest over every part's shards, in part order; returns the split counts."""
    rows = per_part.values()
    splits = {s: split_entry([ShardInfo(**row) for part in rows for row in part[s]], SHARD_DIR) for s in SPLITS}
    counts = {f"{s}_{k}": splits[s][k] for s in SPLITS for k in ("num_docs", "num_tokens")}
    if not splits["validation"]["shards"]:  # a tiny corpus or fraction 0: no split, so `"validation" in splits`
        del splits["validation"]  # is how the trainer knows there is nothing to evaluate on
    stats_path = output_dir / "stats.json"
    manifest = dataset_manifest(
        info,
        splits,
        split_rule="xxh64(doc_id) < validation_fraction * 2**64 -> validation",
        validation_fraction=recipe.shards.validation_fraction,
        recipe=_jsonable(recipe),
        ledger=json.loads(stats_path.read_text()) if stats_path.is_file() else None,
        timings_s=timings,
        created_unix=int(time.time()),
    )
    write_manifest(output_dir, manifest)
    _remove_unlisted_shards(output_dir, per_part)
    return counts


TOKENIZER_KEYS = ("path", "sha256", "vocab_size", "unk_id", "bos_id", "eos_id", "pad_id")  # "source" if adopted


def dataset_manifest(info: dict, splits: dict, **extra: Any) -> dict:
    """What the trainer reads from manifest.json (format, vocabulary, dtype, tokenizer, splits), plus `extra`."""
    return {
        "format": FORMAT,
        "vocab_size": info["vocab_size"],
        "eos_id": info["eos_id"],
        "dtype": token_dtype(info["vocab_size"]).name,
        "tokenizer": {k: info[k] for k in (*TOKENIZER_KEYS, "source") if k in info},
        "splits": splits,
        **extra,
    }


def _remove_unlisted_shards(output_dir: Path, per_part: dict[str, dict]) -> None:
    """Shards of parts gone from kept/, of a longer earlier attempt at a part, or of the per-rank naming of older
    versions are not in the manifest; remove them so the folder is unambiguous."""
    listed = {
        row[name] for rows in per_part.values() for split in SPLITS for row in rows[split] for name, _ in SHARD_FILES
    }
    listed |= {Path(part_rows_file(part)).name for part in per_part}
    shard_dir = output_dir / SHARD_DIR
    stale = [*shard_dir.glob("*.arrow"), *shard_dir.glob(f"*{INDEX_SUFFIX}"), *shard_dir.glob("*.json")]
    for path in stale:
        if path.name not in listed:
            path.unlink()


def _jsonable(recipe: PipelineConfig) -> Any:
    if dataclasses.is_dataclass(recipe):
        recipe = dataclasses.asdict(recipe)
    return json.loads(json.dumps(recipe, default=str))
