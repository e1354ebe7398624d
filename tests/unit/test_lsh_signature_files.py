"""Near dedup over signatures left on disk (dedup/signature_files.py) reads what the in-memory array holds."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.comm import LocalComm
from data_pipeline.dedup import signature_files
from data_pipeline.dedup.lsh import LSHParams, band_keys, find_near_duplicates
from data_pipeline.dedup.signature_files import SignatureFiles

PARAMS = LSHParams.from_threshold(0.8, 128)


def spilled(tmp_path, rows_per_file=(700, 0, 1300, 5), seed=0):
    """Signature files of a few tasks (one empty), a third of their rows dead; returns (files, the live array)."""
    rng = np.random.default_rng(seed)
    signatures = rng.integers(0, 1 << 32, (sum(rows_per_file), 128), dtype=np.uint32)
    signatures[1::7] = signatures[0::7][: len(signatures[1::7])]  # copies, so near dedup finds pairs
    alive = rng.random(len(signatures)) > 1 / 3
    paths, start = [], 0
    for i, rows in enumerate(rows_per_file):
        paths.append(tmp_path / f"t-{i}.u32")
        signatures[start : start + rows].tofile(paths[-1])
        start += rows
    return SignatureFiles.spill(paths, alive, PARAMS, tmp_path / "bands"), signatures[alive]


def test_rows_and_band_keys_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(signature_files, "SPILL_BLOCK_ROWS", 64)  # blocks that cut the files
    files, live = spilled(tmp_path)
    with files:
        positions = np.random.default_rng(1).integers(0, len(live), 3000)  # unsorted, with repeats
        assert np.array_equal(files[positions], live[positions])
        assert files[np.zeros(0, np.int64)].shape == (0, 128)
        for band in range(PARAMS.bands):
            assert np.array_equal(files.band_keys(PARAMS, band), band_keys(live, PARAMS, band))
        with pytest.raises(ValueError, match="band keys were written for"):
            files.band_keys(LSHParams.from_threshold(0.7, 128), 0)
    assert not (tmp_path / "bands").exists()


def test_near_dedup_from_files_equals_in_memory(tmp_path):
    files, live = spilled(tmp_path)
    index = np.arange(len(live)) * 3
    with files:
        from_files = find_near_duplicates(LocalComm(), index, files, PARAMS)
    in_memory = find_near_duplicates(LocalComm(), index, live, PARAMS)
    assert len(in_memory.removed) > 100
    assert np.array_equal(from_files.removed, in_memory.removed)
    assert list(from_files.clusters.records()) == list(in_memory.clusters.records())


def test_row_count_mismatch_is_refused(tmp_path):
    (tmp_path / "t.u32").write_bytes(np.zeros((3, 128), np.uint32).tobytes())
    with pytest.raises(ValueError, match="hold 3 rows for 4 live documents"):
        SignatureFiles.spill([tmp_path / "t.u32"], np.ones(4, bool), PARAMS, tmp_path / "bands")
