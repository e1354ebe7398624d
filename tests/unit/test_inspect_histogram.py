"""`pipeline inspect`'s text histogram counts every document (the command itself is tests/integration/test_inspect.py)."""

from __future__ import annotations

import numpy as np

from data_pipeline.inspect_dataset import text_histogram


def test_text_histogram_counts_every_document():
    lengths = np.array([1, 2, 3, 10, 100, 1000, 1000, 5000])
    rows = text_histogram(lengths, bins=6)
    assert sum(int(row.split()[1]) for row in rows) == len(lengths)
    assert text_histogram(np.zeros(0, np.int64)) == ["(no documents)"]
