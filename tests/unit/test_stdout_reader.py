"""infra.cli.stdout_reader_gone: a BrokenPipeError is a quiet end only when stdout's own reader has gone."""

from __future__ import annotations

import os

from infra.cli import stdout_reader_gone


def test_a_pipe_without_its_reader_is_gone_and_one_with_it_is_not(tmp_path) -> None:
    read_end, write_end = os.pipe()
    assert not stdout_reader_gone(write_end)
    os.close(read_end)
    assert stdout_reader_gone(write_end)
    os.close(write_end)
    with open(tmp_path / "log", "w") as regular:
        assert not stdout_reader_gone(regular.fileno())
