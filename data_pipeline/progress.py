"""Progress bars and summary lines on stderr, the same look for every long stage; `--quiet` silences both."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


class StageProgress:
    """A tqdm bar over input bytes (MB/s) that also shows documents per second."""

    def __init__(self, desc: str, total_bytes: int | None, quiet: bool) -> None:
        self.bar = tqdm(
            total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
            disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
        )  # fmt: skip
        self.docs = 0
        self.started = time.perf_counter()

    def update(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bar.update(nbytes)
        if not self.bar.disable:
            rate = self.docs / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.docs} docs, {rate:,.0f} docs/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def stage_progress(desc: str, total_bytes: int | None, quiet: bool) -> Iterator[StageProgress]:
    bar = StageProgress(desc, total_bytes, quiet)
    try:
        yield bar
    finally:
        bar.close()


def summary(line: str, quiet: bool) -> None:
    """One line a user greps for at the end of a stage."""
    if not quiet:
        print(line, file=sys.stderr, flush=True)
