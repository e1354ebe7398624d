"""Token shards modified after they were written: the reader and the trainer refuse them, naming the shard and
the checksum mismatch, instead of training on bytes the manifest never described.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.launch import run_train

from data_pipeline.shards import ShardError, TokenStream

SHARD = "shards/train-00000.arrow"


def tampered_copy(tiny_dataset: Path, tmp_path: Path, how: str) -> Path:
    """A copy of the dataset whose train shard has one token byte flipped, is truncated, or is missing."""
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shard = data / SHARD
    raw = bytearray(shard.read_bytes())
    if how == "flip":
        raw[len(raw) // 2] ^= 0x01  # inside the token values buffer: still a valid Arrow file
        shard.write_bytes(bytes(raw))
    elif how == "truncate":
        shard.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        shard.unlink()
    return data


@pytest.mark.parametrize(
    "how,message", [("flip", "checksum mismatch"), ("truncate", "checksum mismatch"), ("delete", "missing")]
)
def test_reader_refuses_a_modified_shard_by_name(tiny_dataset: Path, tmp_path: Path, how: str, message: str) -> None:
    data = tampered_copy(tiny_dataset, tmp_path, how)
    with pytest.raises(ShardError, match=message) as err:
        TokenStream(data, "train")
    assert str(data / SHARD) in str(err.value)
    TokenStream(data, "validation")  # the untouched split still opens


def test_unverified_open_of_a_flipped_shard_reads_different_tokens(tiny_dataset: Path, tmp_path: Path) -> None:
    """Why the checksum matters: the flipped file is still a readable shard, only with other tokens."""
    data = tampered_copy(tiny_dataset, tmp_path, "flip")
    good, bad = TokenStream(tiny_dataset, "train"), TokenStream(data, "train", verify=False)
    assert good.num_tokens == bad.num_tokens
    assert (good.window(0, good.num_tokens) != bad.window(0, bad.num_tokens)).sum() >= 1


@pytest.mark.slow
def test_trainer_refuses_a_modified_shard_by_name(tiny_dataset: Path, tmp_path: Path) -> None:
    data = tampered_copy(tiny_dataset, tmp_path, "flip")
    proc = run_train(1, data, tmp_path / "run", ("train.micro_batch_size=2", "train.global_batch_tokens=64"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(data / SHARD) in out and "checksum mismatch" in out, out[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_disk_full_while_writing_a_shard_names_it_and_leaves_no_partial_file(tmp_path: Path) -> None:
    import subprocess

    import numpy as np

    from data_pipeline.shards import write_shard

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("needs root to mount a size-limited tmpfs")
    try:
        shard = disk / "train-00000.arrow"
        with pytest.raises(OSError, match="No space left on device") as err:
            write_shard(shard, ["d"] * 10, [np.arange(5000)] * 10, vocab_size=256, eos_id=1, tokenizer_sha256="x")
        assert str(shard) in str(err.value)
        assert list(disk.iterdir()) == []  # neither the shard nor its temporary
    finally:
        subprocess.run(["umount", str(disk)], check=False)
