"""launch/lib.sh's free_port: the rendezvous port launch/train.sh and launch/mpi.sh use when MASTER_PORT is unset."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support.launch import ROOT

pytestmark = pytest.mark.slow  # starts bash


def test_free_port_is_a_port_nothing_listens_on() -> None:
    script = f"source {ROOT / 'launch' / 'lib.sh'}; free_port; free_port"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PYTHON": sys.executable})
    ports = [int(line) for line in done.stdout.split()]
    assert done.returncode == 0 and len(ports) == 2, done.stderr
    for port in ports:
        assert 1024 < port < 65536 and port != 29500
        with socket.socket() as probe:
            probe.bind(("", port))  # free: a job's rank 0 can serve its rendezvous there
