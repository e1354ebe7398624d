"""Near dedup's signatures left on disk: band keys in one file per band, rows read when a pair needs them.

Holding every live signature in memory costs 4 * num_perm bytes per document (512 B at 128 permutations), the
largest share of near dedup's peak on a rank (BENCHMARKS.md "Dedup memory per rank"). Near dedup reads them in two
ways only: one band of every document at a time (`band_keys`), and the rows of the documents in a batch of
candidate pairs (`__getitem__`). So, as datatrove keeps its signatures on disk per bucket:

- `spill` makes one streaming pass over the scan's per-task `signatures.u32` (row-major, one row per document
  that passed the filters) and writes each band's 64-bit keys of the live documents to its own file, so a band is
  one contiguous read of 8 bytes per document. Band keys depend on the band layout (`dedup.threshold` can change
  it), so they are written here for this run and removed after it, never part of the scan's work files.
- rows are read from the scan's files in blocks of BLOCK_ROWS rows with explicit reads into a bounded buffer
  (pages of a memory map that a read touches would count in the rank's ru_maxrss).

What stays in memory is each live document's row number in the files (8 bytes).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from data_pipeline.dedup.lsh import LSHParams, band_keys

BLOCK_ROWS = 256  # rows per read: 128 KiB of 128-value signatures
SPILL_BLOCK_ROWS = 4096  # rows per block of a streaming pass over the files (`live_rows`)


def live_rows(paths: list[Path], alive: np.ndarray, num_perm: int) -> Iterator[np.ndarray]:
    """The live rows of the scan's signature files, in order, in blocks of at most SPILL_BLOCK_ROWS file rows
    (`alive`: one flag per row over all the files)."""
    start = 0
    for path in paths:
        with open(path, "rb") as f:
            while (block := np.fromfile(f, np.uint32, count=SPILL_BLOCK_ROWS * num_perm)).size:
                block = block.reshape(-1, num_perm)
                yield block[alive[start : start + len(block)]]
                start += len(block)


class SignatureFiles:
    """The signatures of one rank's live documents in the scan's files, or of its share of an earlier dataset's
    index (row-major uint32, one file per task), with their band keys in `folder`. Position i is the i-th True of
    `alive` over the files' rows in order."""

    def __init__(self, paths: list[Path], alive: np.ndarray, params: LSHParams, folder: Path) -> None:
        self.paths, self.params, self.folder = list(paths), params, folder
        self.row_bytes = 4 * params.num_perm
        sizes = np.array([p.stat().st_size // self.row_bytes for p in self.paths], np.int64)
        if int(sizes.sum()) != len(alive):
            raise ValueError(
                f"signature files under {self.paths[0].parent.parent if self.paths else folder} hold "
                f"{int(sizes.sum())} rows for {len(alive)} live documents: incomplete or from another run; rebuild "
                "them (the scan's: delete dedup/work/; an earlier dataset's index: rebuild that dataset)"
            )
        self.file_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.row_of = np.flatnonzero(alive).astype(np.int64)
        self.shape = (len(self.row_of), params.num_perm)

    @classmethod
    def spill(cls, paths: list[Path], alive: np.ndarray, params: LSHParams, folder: Path) -> SignatureFiles:
        """Write every band's keys of the live documents (one pass over the files); the caller `close`s it."""
        signatures = cls(paths, alive, params, folder)
        folder.mkdir(parents=True, exist_ok=True)  # a killed run's band files are overwritten
        with ExitStack() as files:
            bands = [files.enter_context(open(signatures.band_path(b), "wb")) for b in range(params.bands)]
            for block in live_rows(paths, alive, params.num_perm):
                for band, out in enumerate(bands):
                    out.write(band_keys(block, params, band).tobytes())
        return signatures

    def band_path(self, band: int) -> Path:
        return self.folder / f"band-{band:03d}.u64"

    def band_keys(self, params: LSHParams, band: int) -> np.ndarray:
        """`lsh.band_keys` of every live document, from the band's file."""
        if params != self.params:
            raise ValueError(f"SignatureFiles: band keys were written for {self.params}, asked for {params}")
        return np.fromfile(self.band_path(band), np.uint64)

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        """The signatures at these positions (any order, repeats allowed), read block by block in file order."""
        rows = self.row_of[np.asarray(positions, np.int64)]
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        out = np.empty((len(rows), self.params.num_perm), np.uint32)
        for file in np.unique(np.searchsorted(self.file_start, rows, side="right") - 1).tolist():
            first, stop = np.searchsorted(rows, self.file_start[file : file + 2])
            out[order[first:stop]] = self._read(file, rows[first:stop] - self.file_start[file])
        return out

    def _read(self, file: int, rows: np.ndarray) -> np.ndarray:
        """Rows (sorted) of one file, reading only the blocks of BLOCK_ROWS rows that hold them."""
        out = np.empty((len(rows), self.params.num_perm), np.uint32)
        blocks = rows // BLOCK_ROWS
        bounds = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1], True])
        with open(self.paths[file], "rb") as f:
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                f.seek(int(blocks[a]) * BLOCK_ROWS * self.row_bytes)
                block = np.fromfile(f, np.uint32, count=BLOCK_ROWS * self.params.num_perm)
                out[a:b] = block.reshape(-1, self.params.num_perm)[rows[a:b] - blocks[a] * BLOCK_ROWS]
        return out

    def close(self) -> None:
        """Remove the band files (the scan's signature files stay)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> SignatureFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
