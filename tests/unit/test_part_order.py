"""kept/ parts are read in task order for any task count: `part-{:05d}` grows a sixth digit past 100,000 tasks."""

from __future__ import annotations

from data_pipeline.tokenizer import kept_files


def test_kept_parts_in_task_order_past_100000_tasks(tmp_path):
    tasks = [0, 9, 99_999, 100_000, 100_001, 1_234_567]
    for task in reversed(tasks):
        (tmp_path / f"part-{task:05d}.jsonl").write_text("{}\n")
    assert [p.name for p in kept_files(tmp_path)] == [f"part-{task:05d}.jsonl" for task in tasks]
