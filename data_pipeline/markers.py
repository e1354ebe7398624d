"""Stage completion markers: what makes a rerun skip finished work and refuse to mix different inputs.

A marker `DIR/.stages/<stage>.json` is written last, atomically, after the stage's outputs are complete. It
records the stage's identity (its name, its config section and each input's path, size and content digest), the
identity's fingerprint and the sha256 of every output. A rerun skips the stage only when the fingerprint matches
and every output still hashes the same; a marker with another fingerprint is an error naming what changed (each
input whose size or content differs, each recipe key as `section.key: old -> new`), never a silent mix of old and
new outputs.

An input's identity is its path, size and xxh3-128 content digest, not its mtime: a corpus rewritten byte for
byte (as `make demo` does) is the same input. What it costs: the first run reads every input once more to digest
it (xxh3 runs at several GB/s, so this is the disk's read speed), split over the ranks, each rank digesting only
its own share of the files to read (stages/execution.identify_inputs: rank 0 stats each input once and
takes `known_identity` from the cache, the ranks `read_identity` the rest); the digests
are cached in `DIR/.stages/input-digests.json` by (size, mtime_ns, inode), so a rerun over unchanged files stats
each once and reads nothing. A file rewritten with the same bytes is read once more, then matches.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import xxhash

from data_pipeline import storage
from data_pipeline.errors import PipelineError
from infra.files import file_sha256, write_text

MARKER_DIR = ".stages"
DIGEST_CACHE = "input-digests.json"
READ_BYTES = 8 << 20


class StageMismatch(PipelineError):
    """The output folder was produced from other inputs or another recipe."""


# ---------------------------------------------------------------------------------------------------- inputs


def file_digest(path: str | os.PathLike) -> str:
    """xxh3-128 of the file's bytes, read in 8 MiB blocks."""
    digest = xxhash.xxh3_128()
    with storage.open_binary(str(path)) as f:
        while block := f.read(READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def known_identity(where: dict, cached: dict | None) -> dict | None:
    """The identity of a file that storage.stat found as `where`, when it needs no read: an object's ETag, or the
    cache's entry for the same size, mtime_ns and inode. None: its content must be digested (`read_identity`)."""
    if "etag" in where:
        return {"size": where["size"], "xxh3": f"etag:{where['etag']}"} if where["etag"] else None
    if cached and all(cached.get(k) == v for k, v in where.items()):
        return cached
    return None


def read_identity(path: str, where: dict) -> dict:
    """The identity of a file statted as `where`, its content digested (read whole)."""
    if "etag" in where:
        return {"size": where["size"], "xxh3": file_digest(path)}
    return {**where, "xxh3": file_digest(path)}


def digest_cache_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / MARKER_DIR / DIGEST_CACHE


def load_digest_cache(output_dir: str | os.PathLike) -> dict[str, dict]:
    path = digest_cache_path(output_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def save_digest_cache(output_dir: str | os.PathLike, digests: dict[str, dict]) -> None:
    """Merge these digests into the cache (one writer: rank 0, after the ranks' shares were gathered)."""
    path = digest_cache_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(load_digest_cache(output_dir) | digests, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------- identity


def stage_identity(stage: str, config: dict, inputs: dict[str, dict]) -> dict:
    """What a stage's outputs depend on: its name, its config and each input's size and digest (from
    stages/execution.identify_inputs; the mtime is kept only to describe a change, the inode not at all)."""
    files = {
        p: {"size": d["size"], "xxh3": d["xxh3"], "mtime_ns": d.get("mtime_ns")} for p, d in sorted(inputs.items())
    }
    return {"stage": stage, "config": json.loads(json.dumps(config, default=str)), "inputs": files}


def fingerprint(identity: dict) -> str:
    """sha256 of the identity without mtimes: equal for equal names, configs, paths, sizes and contents."""
    inputs = {p: [d["size"], d["xxh3"]] for p, d in identity["inputs"].items()}
    return hashlib.sha256(
        json.dumps([identity["stage"], identity["config"], inputs], sort_keys=True).encode()
    ).hexdigest()


def _flat(config: object, prefix: str = "") -> dict[str, object]:
    """{"dotted.key": value} of a nested dict."""
    if not isinstance(config, dict):
        return {prefix: config}
    return {k: v for key, value in config.items() for k, v in _flat(value, f"{prefix}{key}.").items()} or {prefix: {}}


def _when(mtime_ns: int | None) -> str:
    if mtime_ns is None:
        return "?"
    return datetime.datetime.fromtimestamp(mtime_ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _input_changes(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    changes = [f"input {p}: not an input any more" for p in sorted(old.keys() - new.keys())]
    changes += [f"input {p}: new" for p in sorted(new.keys() - old.keys())]
    for path in sorted(old.keys() & new.keys()):
        was, now = old[path], new[path]
        if was["size"] != now["size"]:
            changes.append(f"input {path}: size {was['size']} -> {now['size']} bytes")
        elif was["xxh3"] != now["xxh3"]:
            changes.append(
                f"input {path}: content changed at the same size (modified {_when(was.get('mtime_ns'))} -> "
                f"{_when(now.get('mtime_ns'))})"
            )
    return changes


def describe_changes(old: dict, new: dict) -> list[str]:
    """What differs between two stage identities: each input (path: size or content) and each config key
    (`section.key: old -> new`)."""
    was, now = _flat(old.get("config", {})), _flat(new["config"])
    changes = [
        f"{key.rstrip('.')}: {was.get(key, '(absent)')!r} -> {now.get(key, '(absent)')!r}"
        for key in sorted(was.keys() | now.keys())
        if was.get(key, "(absent)") != now.get(key, "(absent)")
    ]
    return changes + _input_changes(old.get("inputs", {}), new["inputs"])


# ---------------------------------------------------------------------------------------------------- markers


def marker_path(output_dir: str | os.PathLike, stage: str) -> Path:
    return Path(output_dir) / MARKER_DIR / f"{stage}.json"


def read_marker(output_dir: str | os.PathLike, stage: str, identity: dict) -> dict | None:
    """The stage's marker (its recorded output hashes) if it exists; raises StageMismatch naming what changed
    when it was written for another identity."""
    path = marker_path(output_dir, stage)
    if not path.is_file():
        return None
    marker = json.loads(path.read_text())
    if marker["fingerprint"] != fingerprint(identity):
        recorded = marker.get("identity")
        changed = describe_changes(recorded, identity) if recorded else ["written by an older pipeline version"]
        raise StageMismatch(
            f"{path}: stage '{stage}' in {output_dir} was produced from other inputs or another recipe "
            f"({'; '.join(changed)}); use a new --output folder, or delete the folder to start over"
        )
    return marker


def outputs_intact(output_dir: str | os.PathLike, outputs: list[tuple[str, str]]) -> bool:
    """Every (path inside output_dir, sha256) still exists with that hash (ranks each check a share in parallel)."""
    root = Path(output_dir)
    return all((root / rel).is_file() and file_sha256(root / rel) == sha for rel, sha in outputs)


def task_outputs(output_dir: str | os.PathLike, stage: str, identity: dict) -> dict[str, str] | None:
    """A task's recorded outputs when it completed with this identity and they are intact, else None (redo)."""
    try:
        marker = read_marker(output_dir, stage, identity)
    except StageMismatch:
        return None
    if marker is None or not outputs_intact(output_dir, list(marker["outputs"].items())):
        return None
    return marker["outputs"]


def mark_complete(
    output_dir: str | os.PathLike,
    stage: str,
    identity: dict,
    outputs: list[str | os.PathLike],
    known: dict[str | os.PathLike, str] | None = None,
) -> Path:
    """Record `stage` as complete for this identity with the sha256 of each output (paths inside output_dir).

    `known` maps outputs whose sha256 the caller already computed while writing them; only the rest are read.
    """
    root = Path(output_dir).resolve()
    known = {Path(p).resolve(): sha for p, sha in (known or {}).items()}
    hashes = {}
    for p in outputs:
        full = Path(p).resolve()
        hashes[str(full.relative_to(root))] = known[full] if full in known else file_sha256(full)
    path = marker_path(output_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = {"stage": stage, "fingerprint": fingerprint(identity), "identity": identity, "outputs": hashes}
    return write_text(path, json.dumps(marker, indent=1))


def invalidate(output_dir: str | os.PathLike, stage: str) -> None:
    """Forget a stage's completion (before rewriting its outputs), so a crash mid-rewrite is never taken as done."""
    marker_path(output_dir, stage).unlink(missing_ok=True)
