"""pretrain/rendezvous.py in-process: who may use the rendezvous port, and the job identity that decides it.

Real TCPStores on free local ports; no process is started (the two-job launch is tests/integration/test_two_jobs.py).
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from support.launch import free_port
from torch.distributed import TCPStore

from infra import launcher_env
from pretrain import rendezvous
from pretrain.rendezvous import PortTaken, guard_port, job_identity, trainer_args

TIMEOUT = timedelta(seconds=20)


@pytest.fixture
def master(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    return port


def test_a_rank_of_another_job_stops_before_writing_to_the_store(master: int) -> None:
    store = guard_port(0, "job-a", TIMEOUT)
    keys_before = store.num_keys()
    with pytest.raises(PortTaken) as err:
        guard_port(1, "job-b", TIMEOUT)
    message = str(err.value)
    assert f"127.0.0.1:{master}" in message and "job-a" in message and "--master_port" in message
    assert store.num_keys() == keys_before  # the other job's rank wrote nothing
    assert store.get(rendezvous.JOB_KEY) == b"job-a"


def test_a_rank_of_the_same_job_passes(master: int) -> None:
    store = guard_port(0, "job-a", TIMEOUT)
    assert guard_port(1, "job-a", TIMEOUT) is None
    assert store.get(rendezvous.JOB_KEY) == b"job-a"


def test_rank_0_on_a_taken_port_names_it(master: int) -> None:
    with socket.socket() as taken:
        taken.bind(("", master))
        taken.listen()
        with pytest.raises(PortTaken, match=f"rendezvous port {master} on .* is in use.*--master_port"):
            guard_port(0, "job-b", TIMEOUT)


def test_a_store_that_names_no_job_is_not_joined(master: int, monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = TCPStore("127.0.0.1", master, is_master=True, wait_for_workers=False)
    monkeypatch.setattr(rendezvous, "OWNER_WAIT_S", 0.5)
    with pytest.raises(PortTaken, match="not pretrain.train"):
        guard_port(1, "job-a", TIMEOUT)
    assert foreign.num_keys() == 0


def test_the_deepspeed_launchers_local_rank_is_not_part_of_the_identity() -> None:
    args = ["--data", "d", "--output", "runs/a"]
    assert trainer_args(["--local_rank=1", *args]) == args
    assert trainer_args([*args, "--local_rank", "0"]) == args


def test_identity_same_on_every_rank_and_different_per_run_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendezvous, "launcher_process", lambda: "4242@host:1.000")
    for name in ("SLURM_JOB_ID", "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_SIZE", "2")
    a0 = job_identity(["--local_rank=0", "--output", "runs/a"])
    a1 = job_identity(["--local_rank=1", "--output", "runs/a"])
    b0 = job_identity(["--local_rank=0", "--output", "runs/b"])
    assert a0 == a1 != b0
    monkeypatch.setattr(rendezvous, "launcher_process", lambda: "4343@host:2.000")  # the same folder, a new launch
    assert job_identity(["--local_rank=0", "--output", "runs/a"]) != a0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "3", "SLURM_PROCID": "1"}, "slurm 77.3"),
        ({"SLURM_JOB_ID": "77"}, None),  # a batch script's shell: no step of tasks
        ({"PMIX_NAMESPACE": "prterun-vm-123@1"}, "PMIX_NAMESPACE=prterun-vm-123@1"),
        ({"OMPI_MCA_ess_base_jobid": "4005560321"}, "OMPI_MCA_ess_base_jobid=4005560321"),
        ({"TORCHELASTIC_RUN_ID": "none"}, None),
        ({"TORCHELASTIC_RUN_ID": "exp7"}, "torchelastic exp7"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, None),  # the deepspeed launcher has none
    ],
)
def test_launcher_job_id(env: dict, expected: str | None) -> None:
    assert launcher_env.job_id(env) == expected
