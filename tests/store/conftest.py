"""Fixtures of the store tests: a process that forks real pushers (tests/store/push_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


class PushWorker:
    """Talks to tests/store/push_worker.py: one JSON command per line, one JSON answer per line."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def send(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


@pytest.fixture(scope="module")
def push_worker():
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "push_worker.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        yield PushWorker(proc)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
