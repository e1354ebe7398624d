"""`pipeline run` from bucket to bucket against a real S3-compatible HTTP server on 127.0.0.1 (moto's standalone
server), through s3fs and the standard AWS_* environment, as users point it at AWS or MinIO.

A small forwarding proxy sits between the pipeline and the server: it records every request (so the tests see
ranged reads) and can make the server fail mid-run (every request answered 503 after the Nth upload), which is
how a store that goes away during a job looks to the client. Starts processes: the integration tier.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.documents import stdlib_docs
from support.launch import free_port
from support.multilingual_docs import PASSAGES
from support.warc_support import ArchiveWriter, page_html

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")
pytest.importorskip("s3fs")

REPO = Path(__file__).resolve().parents[2]
PAGE_URL = "https://docs.example.org/page/"
RECIPE = ["workers=1", "filters.profile=docs", "dedup.num_perm=32", "tokenizer.vocab_size=600",
          "shards.validation_fraction=0.1", "read.task_bytes=20000"]  # fmt: skip


class FaultyProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to the S3 server; records (method, path, Range); once `fail_after_markers` marker
    files (keys under .stages/) were uploaded, answers everything with 503 until it is None again."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream_port = upstream_port
        self.requests: list[tuple[str, str, str | None]] = []
        self.fail_after_markers: int | None = None
        self.markers_put = 0


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        proxy: FaultyProxy = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy.requests.append((self.command, self.path, self.headers.get("Range")))
        failing = proxy.fail_after_markers is not None and proxy.markers_put >= proxy.fail_after_markers
        proxy.markers_put += self.command == "PUT" and "/.stages/" in self.path
        if failing:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


@pytest.fixture(scope="module")
def s3() -> Iterator[FaultyProxy]:
    """moto's server on a free port behind a FaultyProxy; buckets `corpus` and `datasets`."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and server.poll() is None, "moto server did not start"
            time.sleep(0.2)
    proxy = FaultyProxy(port)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def env(s3: FaultyProxy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment a user sets for a bucket: endpoint and credentials, nothing pipeline-specific."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.server_address[1]}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "2",
        "PIPELINE_STAGING_DIR": str(tmp_path_factory.mktemp("staging")),
    }


def client(env: dict[str, str]):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip


@pytest.fixture(scope="module")
def corpus(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two jsonl files (one cut into byte-range tasks) and a WARC file of two pages in s3://corpus/crawl/, and the same
    files locally."""
    folder = tmp_path_factory.mktemp("corpus")
    docs = stdlib_docs(60)
    s3 = client(env)
    s3.create_bucket(Bucket="corpus")
    s3.create_bucket(Bucket="datasets")
    for k, half in enumerate([docs[:40], docs[40:] + docs[:1]]):
        path = folder / f"part{k}.jsonl"
        path.write_text("".join(json.dumps({"id": f"p{k}-{i}", "text": t}) + "\n" for i, t in enumerate(half)))
        s3.upload_file(str(path), "corpus", f"crawl/{path.name}")
    archive = ArchiveWriter(folder / "pages.warc.gz")
    for i, passage in enumerate(PASSAGES["en"]):
        archive.response(f"{PAGE_URL}{i}", page_html([s + "." for s in passage.split(". ") if s.strip()]).encode())
    archive.close()
    s3.upload_file(str(folder / "pages.warc.gz"), "corpus", "crawl/pages.warc.gz")
    return folder


def pipeline_run(
    env: dict[str, str], source: str, output: str, *settings: str, **extra_env: str
) -> subprocess.CompletedProcess:
    sets = [a for s in [*RECIPE, *settings] for a in ("--set", s)]
    command = [sys.executable, "-m", "data_pipeline.cli", "run", "--input", source, "--output", output, *sets]
    return subprocess.run(command, env={**env, **extra_env}, capture_output=True, text=True, timeout=600)


def bucket_state(env: dict[str, str], bucket: str, prefix: str) -> dict[str, tuple[str, str]]:
    """{key: (ETag, LastModified)} of every object under the prefix."""
    pages = client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: (o["ETag"], str(o["LastModified"])) for p in pages for o in p.get("Contents", [])}


def read_json(env: dict[str, str], bucket: str, key: str) -> dict:
    return json.loads(client(env).get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def local_run(env: dict[str, str], corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    result = pipeline_run(env, str(corpus / "*"), str(out))
    assert result.returncode == 0, result.stderr
    return out


def splits(manifest: dict) -> dict:
    return {s: (v["num_docs"], v["num_tokens"]) for s, v in manifest["splits"].items()}


def test_bucket_to_bucket_matches_a_local_run_and_reads_ranges(
    env: dict[str, str], s3: FaultyProxy, corpus: Path, local_run: Path
) -> None:
    s3.requests.clear()
    result = pipeline_run(env, "s3://corpus/crawl/", "s3://datasets/v1")
    assert result.returncode == 0, result.stderr
    manifest = read_json(env, "datasets", "v1/manifest.json")
    local = json.loads((local_run / "manifest.json").read_text())
    assert splits(manifest) == splits(local)
    stats = read_json(env, "datasets", "v1/stats.json")
    assert stats["kept_docs"] == json.loads((local_run / "stats.json").read_text())["kept_docs"]
    keys = bucket_state(env, "datasets", "v1/")
    assert {f"v1/{row['path']}" for split in manifest["splits"].values() for row in split["shards"]} <= set(keys)
    ranged = [r for m, p, r in s3.requests if m == "GET" and p.startswith("/corpus/crawl/") and r]
    assert ranged, "inputs were not read with ranged GETs"
    index = [
        row for split in manifest["splits"].values() for shard in split["shards"] for row in shard_index(env, shard)
    ]
    assert len(index) == sum(split["num_docs"] for split in manifest["splits"].values())
    pages = [row for row in index if row["source"] == "s3://corpus/crawl/pages.warc.gz"]
    assert pages and all(row["url"].startswith(PAGE_URL) for row in pages)  # a kept token traces back to its page


def shard_index(env: dict[str, str], shard: dict) -> list[dict]:
    body = client(env).get_object(Bucket="datasets", Key=f"v1/{shard['index']}")["Body"].read()
    return pq.read_table(io.BytesIO(body)).to_pylist()


def test_a_rerun_from_another_machine_skips_every_task_and_uploads_only_the_manifest(
    env: dict[str, str], tmp_path: Path, s3: FaultyProxy
) -> None:
    before = bucket_state(env, "datasets", "v1/")
    assert "v1/manifest.json" in before  # the run of the test above
    s3.requests.clear()
    result = pipeline_run(env, "s3://corpus/crawl/", "s3://datasets/v1", PIPELINE_STAGING_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stderr + result.stdout
    after = bucket_state(env, "datasets", "v1/")
    manifest = "v1/manifest.json"  # the tokenize stage rewrites it on every run (its creation time, timings)
    assert {k: v for k, v in after.items() if k != manifest} == {k: v for k, v in before.items() if k != manifest}
    assert [p for m, p, _ in s3.requests if m == "PUT"] == [f"/datasets/{manifest}"]


def test_a_server_failing_mid_run_fails_loudly_and_the_rerun_completes(
    env: dict[str, str], tmp_path: Path, s3: FaultyProxy, local_run: Path
) -> None:
    s3.fail_after_markers, s3.markers_put = 2, 0
    try:
        # a read that meets the 503s is retried (read.retries) before the job ends: quickly here
        failed = pipeline_run(env, "s3://corpus/crawl/", "s3://datasets/v2", "read.retry_backoff_s=0.05")
    finally:
        s3.fail_after_markers = None
    assert failed.returncode != 0
    error = failed.stderr.strip().splitlines()[-1]  # one line naming the object and what to check
    assert error.startswith("pipeline run: error: s3://") and "check the URL, the credentials" in error
    assert "(task 2): read failed 4 times (1 attempt + read.retries=3)" in error  # the first request to fail
    half = bucket_state(env, "datasets", "v2/")
    marker_keys = [k for k in half if "/.stages/" in k]
    assert len(marker_keys) == 2 and "v2/manifest.json" not in half and "v2/.stages/dedup.json" not in half
    for key in marker_keys:  # a marker in the bucket vouches only for outputs that are there, whole
        for rel, sha in read_json(env, "datasets", key)["outputs"].items():
            body = client(env).get_object(Bucket="datasets", Key=f"v2/{rel}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == sha
    rerun = pipeline_run(env, "s3://corpus/crawl/", "s3://datasets/v2", PIPELINE_STAGING_DIR=str(tmp_path))
    assert rerun.returncode == 0, rerun.stderr
    reused = re.search(r"scan: \d+ of \d+ tasks scanned, (\d+) reused", rerun.stderr)
    assert reused and int(reused.group(1)) == 2  # the tasks whose markers reached the bucket, on a fresh machine
    manifest = read_json(env, "datasets", "v2/manifest.json")
    assert splits(manifest) == splits(json.loads((local_run / "manifest.json").read_text()))
    for split in manifest["splits"].values():
        for row in split["shards"]:
            body = client(env).get_object(Bucket="datasets", Key=f"v2/{row['path']}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == row["sha256"]
