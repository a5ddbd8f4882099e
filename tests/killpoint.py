"""Kill a training run at a point the test chooses, never after a wall-clock delay.

A victim ``ltrain`` process gets the callback :class:`PauseAtStep` through a Hydra override (see
:func:`pause_overrides`); when it finishes optimizer step ``step`` it writes ``rank<R>.json`` (the step and
epoch it reached) into ``marker_dir`` and waits there until it is killed. The test waits for the marker(s),
sends the signal (SIGKILL, or SIGINT for Ctrl-C), and then checks with :func:`assert_landed` that the kill
landed where it meant it to: the marker's step, and the run not finished. Machine load changes only how long
the test waits, never where the kill lands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import lightning as L

TESTS = Path(__file__).resolve().parent


class PauseAtStep(L.Callback):
    """After optimizer step ``step`` (``trainer.global_step``), write a marker and wait to be killed."""

    def __init__(self, step: int, marker_dir: str) -> None:
        self.step, self.marker_dir = int(step), Path(marker_dir)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        marker = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch_idx": batch_idx}
        tmp = self.marker_dir / f".rank{trainer.global_rank}.json.tmp"
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, self.marker_dir / f"rank{trainer.global_rank}.json")
        while True:  # the test kills us here
            time.sleep(0.05)


def pause_overrides(step: int, marker_dir: Path) -> list[str]:
    """Hydra overrides that add :class:`PauseAtStep` to an ``ltrain`` run's callbacks."""
    return [
        "+callbacks.pause_at_step._target_=killpoint.PauseAtStep",
        f"+callbacks.pause_at_step.step={step}",
        f"+callbacks.pause_at_step.marker_dir={marker_dir}",
    ]


def env_with_killpoint() -> dict[str, str]:
    """The environment a victim needs to import :mod:`killpoint` (this folder on PYTHONPATH)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{path}" if path else str(TESTS)}


def spawn(cmd: list[str], *, env: dict[str, str] | None = None, new_session: bool = True) -> subprocess.Popen:
    """Start ``cmd`` with its stdout and stderr in a log file (``proc.log``), never in a pipe.

    A pipe nobody reads fills at 64 KiB and then blocks the child in its next write: a victim that logs a
    little more (a slow machine's warnings, a graceful shutdown's traceback) would hang until a timeout.
    SIGINT is reset to its default in the child (see :func:`_default_sigint`).
    """
    fd, log = tempfile.mkstemp(prefix="ltrain-child-", suffix=".log")
    with os.fdopen(fd, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
            env=env,
            preexec_fn=_default_sigint,
        )
    proc.log = Path(log)
    return proc


def _default_sigint() -> None:
    """The child takes Ctrl-C like a terminal's process. A shell starts background jobs (``make test &``,
    nohup, some CI runners) with SIGINT IGNORED, children inherit that, and Python then never installs its
    KeyboardInterrupt handler: a Ctrl-C test's victim would ignore the signal it is sent."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tail(proc: subprocess.Popen, chars: int = 3000) -> str:
    """The end of a :func:`spawn`-ed process's output, for assertion messages."""
    return proc.log.read_text(errors="replace")[-chars:]


def wait_for_markers(victim: subprocess.Popen, marker_dir: Path, ranks: int = 1, timeout: float = 900) -> list[dict]:
    """The markers of ``ranks`` ranks once all are written; fails if the victim exits first."""
    deadline = time.monotonic() + timeout  # only a guard against a hung victim: load never decides the outcome
    files = [marker_dir / f"rank{r}.json" for r in range(ranks)]
    while not all(f.exists() for f in files):
        if victim.poll() is not None:
            err = tail(victim) if hasattr(victim, "log") else ""
            raise AssertionError(f"the victim exited ({victim.returncode}) before reaching its kill point:\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the victim did not reach its kill point in {timeout:.0f} s")
        time.sleep(0.05)
    return [json.loads(f.read_text()) for f in files]


def kill(victim: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the victim's whole process group (all DDP ranks) and reap it; its return code."""
    os.killpg(victim.pid, sig)
    try:
        return victim.wait(timeout=300)
    except subprocess.TimeoutExpired as err:  # never leave a victim behind: a stuck one is SIGKILLed, then reported
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        raise AssertionError(
            f"the victim ignored signal {sig} for 300 s:\n{tail(victim) if hasattr(victim, 'log') else ''}"
        ) from err


def assert_landed(markers: list[dict], step: int, run_dir: Path, checkpoint: bool = False) -> str:
    """Check the kill landed at ``step`` of an unfinished run (after a ``last.ckpt`` if ``checkpoint``).

    Returns a one-line account of where it landed, for the ``kill_report`` fixture.
    """
    assert [m["step"] for m in markers] == [step] * len(markers), markers
    assert not (run_dir / "results.json").exists(), "the run finished before the kill"
    where = f"kill landed at global step {step} (epoch {markers[0]['epoch']}, batch {markers[0]['batch_idx']})"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists() or not checkpoint, f"no {ckpt} before the kill at step {step}"
    if ckpt.exists():
        import torch

        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert saved["global_step"] < step, (saved["global_step"], step)
        where += f"; last.ckpt holds step {saved['global_step']} (epoch {saved['epoch']})"
    return where


def sigkill_then_resume(argv: list[str], run_dir: Path, step: int, marker_dir: Path) -> str:
    """Run ``argv`` (an ``ltrain`` command without ``hydra.run.dir``) into ``run_dir``, SIGKILL it after optimizer
    step ``step`` (after a checkpoint), then ``resume=auto`` it to the end. Where the kill landed, for ``kill_report``."""
    victim = spawn([*argv, f"hydra.run.dir={run_dir}", *pause_overrides(step, marker_dir)], env=env_with_killpoint())
    markers = wait_for_markers(victim, marker_dir)
    kill(victim, signal.SIGKILL)
    where = assert_landed(markers, step, run_dir, checkpoint=True)
    resumed = subprocess.run(
        [*argv, f"hydra.run.dir={run_dir}", "resume=auto"], capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return where
