"""An offline wandb run of the 2-rank trainer holds metrics.csv's losses under the run's name (the config error is
tests/unit/test_wandb_log.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from pretrain.metrics import read_metrics

BLOCK = 32 << 10  # W&B's run file: a 7-byte header, then LevelDB-log blocks of records (crc, length, type)
HEADER = 7
FULL, FIRST, LAST = 1, 2, 4


def wandb_records(path: Path) -> list:
    """Every record of a .wandb run file, as wandb's own protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER]) if left >= HEADER else (0, 0, 0)
        if left < HEADER or (length == 0 and kind == 0):  # the block's zero-filled tail
            pos += left
            continue
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history(records: list) -> dict[int, dict]:
    """step -> {key: value} of the logged rows."""
    rows: dict[int, dict] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows.setdefault(items["_step"], {}).update(items)
    return rows


def nine_digits(values: dict[int, float]) -> dict[int, str]:
    """The values as metrics.csv writes them (9 significant digits), to compare with W&B's full floats."""
    return {key: f"{value:.9g}" for key, value in values.items()}


def test_offline_run_holds_the_csv_losses_under_the_run_name(deepspeed_launcher_launch) -> None:
    """The deepspeed launcher's 2-rank, 3-step run (shared with test_train.py) with log.wandb=true, offline."""
    proc, run = deepspeed_launcher_launch
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, f"one W&B run (rank 0's) expected, found {run_files}"
    records = wandb_records(run_files[0])
    rows = history(records)
    csv_losses = {int(r["step"]): r["loss"] for r in read_metrics(run) if "loss" in r and "val_loss" not in r}
    assert sorted(csv_losses) == [1, 2, 3]
    assert nine_digits({step: rows[step]["Train/loss"] for step in csv_losses}) == nine_digits(csv_losses)
    val_rows = [r for r in read_metrics(run) if "val_loss" in r]
    assert f"{rows[3]['Train/val_loss']:.9g}" == f"{val_rows[-1]['val_loss']:.9g}"  # the last eval joins step 3

    (started,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (started.display_name, started.run_group, started.project) == ("my-run", "tests", "launch-tests")
    config = {item.key: json.loads(item.value_json) for item in started.config.update}
    assert config["train"]["max_steps"] == 3 and config["log"]["wandb"] is True
    assert config["world_size"] == 2
    (ended,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert ended.exit_code == 0
