"""Where the pipeline's bytes live: local paths and fsspec URLs (s3://, gs://, az://, https://) behind one set of
calls.

Inputs are read where they are. A URL is opened through fsspec (s3fs for s3://, configured by the standard
environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, as boto3
reads them); its file object fetches blocks with ranged GETs, so a byte-range task reads its range and the
bytes up to its last line's end, never the whole object. An input's identity on object storage is its size and
the ETag the server reports, so digesting a bucket of crawl files reads none of them.

An output URL is mirrored by a local staging folder (`staging_folder`): the stages run unchanged on POSIX files
(atomic renames, pwrite, memory maps), and the folder is pulled before a stage and published after it. Object
stores have no rename, so publishing relies on write-once keys and order instead: every data file is uploaded
first (one PUT: a key is either absent or whole), and the completion files (stage and task markers under
.stages/, manifest.json) last; each task's outputs and then its marker are also uploaded as soon as the task
finishes (`publish_task`, from stages/execution.run_once), so a job that dies keeps its finished tasks; a stale completion file is deleted from the bucket before anything it vouches
for is replaced. A job that dies mid-publish therefore leaves data keys without their marker, which a rerun
(here or on another machine, after its pull) redoes, never takes as done: markers also record every output's
sha256, and a task whose outputs do not hash to it is redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from data_pipeline.comm import Comm, on_root
from data_pipeline.errors import PipelineError
from infra.files import write_text

STAGING_ENV = "PIPELINE_STAGING_DIR"
PUBLISHED = ".stages/published.json"  # what the bucket already holds
TASKS_PUBLISHED = ".stages/published/"  # ... per task uploaded by publish_task (one writer each: its rank)
ORIGIN = ".stages/origin-url"  # the URL a staging folder mirrors
# files that describe this machine's copy, not the output: never published
LOCAL_ONLY = (PUBLISHED, TASKS_PUBLISHED, ORIGIN, ".stages/input-digests.json")
COMPLETION_NAMES = ("manifest.json",)
COMPLETION_DIR = ".stages/"


class StorageError(PipelineError):
    """An object store refused or failed a request; the message names the URL."""


def is_url(path: str | os.PathLike) -> bool:
    """True for fsspec URLs (s3://bucket/key, gs://, az://, https://); local paths and file:// are not."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def _filesystem(url: str):
    """The fsspec file system of a URL and the URL's path on it (the protocol stripped)."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:  # no backend for the scheme, or an unknown scheme
        raise StorageError(
            f"{url}: {err}; for s3:// install the extra: pip install 'dspretrain[s3]' (gcsfs for gs://, adlfs for az://)"
        ) from err


def _remote(fn, url: str, what: str):
    """Call fn(); an object store's failure becomes a StorageError naming the URL and what was being done."""
    try:
        return fn()
    except FileNotFoundError:
        raise
    except Exception as err:  # botocore, aiohttp and fsspec raise many types; all mean the same to the user
        raise StorageError(f"{url}: cannot {what} ({type(err).__name__}: {err}); check the URL, the credentials "
                           "(AWS_* environment) and that the endpoint is reachable, then rerun") from err  # fmt: skip


# ---------------------------------------------------------------------------------------------------- inputs


def open_binary(path: str) -> IO[bytes] | RemoteFile:
    """A seekable binary file of a local path or URL (ranged reads on object storage)."""
    if not is_url(path):
        return open(path, "rb")
    fs, key = _filesystem(path)
    return RemoteFile(_remote(lambda: fs.open(key, "rb"), path, "open for reading"), path)


class RemoteFile:
    """An fsspec file whose failed reads and seeks name the URL (a store's 503 alone reads "[Errno 16] Service
    Unavailable", with no object named)."""

    def __init__(self, file: IO[bytes], url: str) -> None:
        self.file, self.url = file, url

    def read(self, size: int = -1) -> bytes:
        return _remote(lambda: self.file.read(size), self.url, "read")

    def seek(self, offset: int, whence: int = 0) -> int:
        return _remote(lambda: self.file.seek(offset, whence), self.url, "seek")

    def __getattr__(self, name: str):  # tell, close, closed, readable, seekable, size: as the file has them
        return getattr(self.file, name)

    def __enter__(self) -> RemoteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def file_size(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    fs, key = _filesystem(path)
    return int(_remote(lambda: fs.size(key), path, "read the object's size"))


def stat(path: str) -> dict:
    """{"size", "mtime_ns", "inode"} of a local file; {"size", "etag"} of an object (its content identity; None
    where the store reports none, as plain https:// servers may)."""
    if not is_url(path):
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    fs, key = _filesystem(path)
    info = _remote(lambda: fs.info(key), path, "read the object's size and ETag")
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return {"size": int(info["size"]), "etag": str(etag).strip('"') if etag else None}


def expand_url(pattern: str) -> list[str]:
    """The objects a URL names, sorted: one object, every object under a prefix, or a glob's matches."""
    fs, path = _filesystem(pattern)

    def found() -> list[str]:
        if any(c in path for c in "*?["):
            return [p for p in fs.glob(path) if fs.isfile(p)]
        if fs.isdir(path):
            return fs.find(path)
        return [path] if fs.exists(path) else []

    return sorted(fs.unstrip_protocol(name) for name in _remote(found, pattern, "list"))


# ---------------------------------------------------------------------------------------------------- outputs


def staging_folder(url: str) -> Path:
    """The local folder that mirrors an output URL: $PIPELINE_STAGING_DIR/<hash of the URL>, else under the
    system temp folder. Under several MPI ranks on several nodes it must be on a shared file system, as a
    local --output must."""
    root = Path(os.environ.get(STAGING_ENV) or Path(tempfile.gettempdir()) / "pipeline-staging")
    return root / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def is_completion_file(rel: str) -> bool:
    """Markers and the manifest: published last, deleted first (they vouch for the other files)."""
    return rel.startswith(COMPLETION_DIR) or rel in COMPLETION_NAMES


def _local_files(folder: Path) -> dict[str, os.stat_result]:
    files = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(LOCAL_ONLY) and not path.name.endswith(".tmp"):
            files[rel] = path.stat()
    return files


def _remote_files(url: str) -> dict[str, int]:
    """{key relative to the URL: size} of every object under it."""
    fs, root = _filesystem(url.rstrip("/"))

    def listing() -> dict[str, int]:
        if not fs.exists(root):
            return {}
        return {name[len(root) + 1 :]: int(info["size"]) for name, info in fs.find(root, detail=True).items()}

    return _remote(listing, url, "list the output")


def pull(url: str, folder: Path) -> None:
    """Make the staging folder hold the bucket's output: every object is downloaded unless the folder's file is
    the one uploaded from here (same size and mtime as when it was published). The markers then decide, as on
    local disk, which tasks a rerun skips; a local file the bucket never got is replaced by the bucket's, and a
    local marker that vouched for it no longer matches its hash, so that task is redone."""
    folder.mkdir(parents=True, exist_ok=True)
    local = _local_files(folder)
    uploaded = _load_published(folder) | _tasks_published(folder)
    fs, _ = _filesystem(url)
    published = {}
    for rel in _remote_files(url):
        target = folder / rel
        if rel not in local or uploaded.get(rel) != _version(local[rel]):
            target.parent.mkdir(parents=True, exist_ok=True)
            _remote(lambda rel=rel, target=target: fs.get(_key(url, rel), str(target)), _key(url, rel), "download")
        published[rel] = _version(target.stat())
    _save_published(folder, published)
    shutil.rmtree(folder / TASKS_PUBLISHED, ignore_errors=True)  # merged into PUBLISHED
    write_text(folder / ORIGIN, url)


def publish(folder: Path, url: str) -> int:
    """Make the bucket hold the staging folder: delete what the folder no longer has (completion files first),
    upload what changed (data first, completion files last). Returns the number of files uploaded."""
    fs, _ = _filesystem(url)
    local = _local_files(folder)
    published = _load_published(folder) | _tasks_published(folder)
    remote = _remote_files(url)
    gone = [rel for rel in remote if rel not in local]
    changed = [rel for rel, st in local.items() if rel not in remote or published.get(rel) != _version(st)]
    stale = [rel for rel in changed if is_completion_file(rel) and rel in remote]
    for rel in sorted(gone, key=lambda r: not is_completion_file(r)) + stale:
        _remote(lambda rel=rel: fs.rm(_key(url, rel)), _key(url, rel), "delete")
        published.pop(rel, None)
    for rel in sorted(changed, key=is_completion_file):
        _remote(lambda rel=rel: fs.put_file(str(folder / rel), _key(url, rel)), _key(url, rel), "upload")
        published[rel] = _version(local[rel])
        _save_published(folder, published)
    _save_published(folder, published)
    shutil.rmtree(folder / TASKS_PUBLISHED, ignore_errors=True)  # merged into PUBLISHED
    return len(changed)


def publish_task(folder: Path, outputs: list[str], marker: str) -> None:
    """Upload a finished task's outputs, then its marker, when `folder` stages an output URL (a no-op for a
    local output folder), so a job that dies later keeps the task: a rerun elsewhere pulls it and skips it.

    A stale marker of the task in the bucket may meet new outputs until this marker lands; the marker's sha256
    of every output is what makes such a pair a redo, never a skip.
    """
    origin = folder / ORIGIN
    if not origin.is_file():
        return
    url = origin.read_text()
    fs, _ = _filesystem(url)
    for rel in [*outputs, marker]:
        _remote(lambda rel=rel: fs.put_file(str(folder / rel), _key(url, rel)), _key(url, rel), "upload")
    versions = {rel: _version((folder / rel).stat()) for rel in [*outputs, marker]}
    ledger = folder / TASKS_PUBLISHED / Path(marker).name
    ledger.parent.mkdir(parents=True, exist_ok=True)
    write_text(ledger, json.dumps(versions))


def _tasks_published(folder: Path) -> dict[str, list[int]]:
    ledgers = sorted((folder / TASKS_PUBLISHED).glob("*.json"))
    return {rel: version for path in ledgers for rel, version in json.loads(path.read_text()).items()}


def _key(url: str, rel: str) -> str:
    return f"{url.rstrip('/')}/{rel}"


def _version(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns]


def _load_published(folder: Path) -> dict[str, list[int]]:
    path = folder / PUBLISHED
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_published(folder: Path, published: dict[str, list[int]]) -> None:
    (folder / PUBLISHED).parent.mkdir(parents=True, exist_ok=True)
    write_text(folder / PUBLISHED, json.dumps(published, sort_keys=True))


@contextlib.contextmanager
def output_folder(comm: Comm, output: str) -> Iterator[Path]:
    """The local folder the stages write: `output` itself, or the staging folder of an output URL, pulled
    before (rank 0; the other ranks wait) and published after the block, only when the block succeeded.

    Collective: two on_root calls (every rank enters and leaves the block together).
    """
    if not is_url(output):
        yield Path(output)
        return
    folder = staging_folder(output)
    on_root(comm, f"pulling {output} into {folder}", lambda: pull(output, folder))
    yield folder
    on_root(comm, f"publishing {folder} to {output}", lambda: publish(folder, output))
