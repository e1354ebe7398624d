"""launch/train.sh for real: two "nodes" on one machine, each its own deepspeed launcher (--no_ssh).

Both invocations read one hostfile with two host names that resolve locally, meet at 127.0.0.1, and train the
debug preset together on CPU (gloo, one process per node). The run must show world size 2 on both nodes, write
one checkpoint holding both ranks' ZeRO partitions, and give every node the environment file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from support.launch import free_port

REPO = Path(__file__).resolve().parents[2]
TRAIN_SH = REPO / "launch" / "train.sh"
VENV_BIN = REPO / ".venv" / "bin"


def launch_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_ADDR="127.0.0.1")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def two_local_hosts(path: Path) -> Path:
    """A hostfile naming this machine twice: 'localhost' and its short hostname (both resolve to it)."""
    short = socket.gethostname().split(".")[0]
    if short == "localhost":
        short = "127.0.0.1"
    path.write_text(f"# two 'nodes' on one machine\nlocalhost slots=1\n{short} slots=1\n")
    return path


def test_hostfile_example_parses_with_deepspeed() -> None:
    """The shipped example is a valid hostfile for the launcher (comments skipped, one entry per host)."""
    from deepspeed.launcher.runner import fetch_hostfile

    pool = fetch_hostfile(str(REPO / "launch" / "hostfile.example"))
    assert list(pool.values()) == [8, 8, 8, 8]


def test_include_exclude_reach_the_launcher(tmp_path: Path) -> None:
    """--exclude is passed through: with one of two hosts excluded, the launcher starts a world of 1."""
    hosts = two_local_hosts(tmp_path / "hostfile")
    short = hosts.read_text().split()[-2]
    env = launch_env({"NODE_RANK": "0", "MASTER_PORT": str(free_port()), "LOG_DIR": str(tmp_path / "logs")})
    run = subprocess.run(
        [str(TRAIN_SH), "--hostfile", str(hosts), "--exclude", short, "--", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "dist_world_size=1" in run.stdout
    assert "global_rank_mapping=defaultdict(<class 'list'>, {'localhost': [0]})" in run.stdout
    assert "--data" in " ".join(p.read_text() for p in (tmp_path / "logs").glob("*_rank0.log"))  # the --help text


@pytest.mark.slow
def test_two_nodes_over_loopback_train_one_checkpoint(tmp_path: Path, tiny_dataset: Path) -> None:
    hosts = two_local_hosts(tmp_path / "hostfile")
    run_dir = tmp_path / "run"
    port = str(free_port())
    args = ["--data", str(tiny_dataset), "--preset", "debug", "--output", str(run_dir), "--set", "train.max_steps=3"]
    nodes = [
        subprocess.Popen(
            [str(TRAIN_SH), "--hostfile", str(hosts), "--", *args],
            env=launch_env({"NODE_RANK": str(rank), "MASTER_PORT": port}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=420)[0] for node in nodes]
    for rank, (node, out) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank} failed:\n{out[-4000:]}"
        assert "dist_world_size=2" in out, out[-2000:]
        assert f"node_rank={rank}" in out

    checkpoints = run_dir / "checkpoints"
    tag = (checkpoints / "latest").read_text().strip()
    files = {p.name for p in (checkpoints / tag).iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    assert len([p for p in checkpoints.iterdir() if p.is_dir()]) == 1

    ds_config = json.loads((run_dir / "ds_config.json").read_text())
    assert ds_config["train_batch_size"] == (
        ds_config["train_micro_batch_size_per_gpu"] * ds_config["gradient_accumulation_steps"] * 2
    )
    logs = run_dir / "logs"
    assert sorted(p.name.split("_")[-1] for p in logs.glob("*_rank*.log")) == ["rank0.log", "rank1.log"]
    env_file = dict(line.split("=", 1) for line in (logs / "deepspeed_env").read_text().splitlines())
    assert env_file["DS_ACCELERATOR"] == "cpu"
    assert str(REPO) in env_file["PYTHONPATH"].split(os.pathsep)
