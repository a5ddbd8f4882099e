"""Every shell command in README.md and docs/*.md RUNS, end to end, so the documentation cannot rot.

The docs are run one by one, each in the order it gives its commands, in one sandbox: a fresh working
directory (runs land in its ``runs/``) and a fresh zoo, offline. A doc that loads what another doc makes
(``zoo:digits04`` from docs/zoo.md) has that doc run first. Each command runs as the user types it, through
the installed entry point, with overrides APPENDED that make it small (Hydra lets the last value of a key win:
one epoch of two batches, two Optuna trials); nothing else is changed but placeholders, which become what the
sandbox made: ``runs/<date>/<time>`` / ``runs/...`` the last finished run, ``runs/multirun/<date>/<time>`` the
last sweep, ``/my/photos`` a folder of digit images, ``weights.safetensors`` a resnet18 state dict. A ``$``
line of a plain block must also print every output line the doc shows under it (``...`` skips).
``make demo`` runs the command ``make -n demo`` prints; ``python bench/X.py`` runs from the repo root with
SHRINK_SCRIPT's flags appended and ``--out`` in the sandbox. The few commands that cannot run here are listed in
NOT_RUN with the reason, and a new command that is neither run nor listed fails the test.

Slow (about 5 minutes on 2 CPU cores): ``pytest -m slow tests/test_docs_run.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _fashion_mnist_installed
from tests.doc_commands import APPS, DOCS, ROOT, DocCommand, doc_commands

BIN = Path(sys.executable).parent
SHRINK = {
    "ltrain": [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
    ],
    "ltrain-predict": ["limit=64"],
    "ltrain-export": ["latency.repeats=1", "latency.warmup=0"],
}
SHRINK_SCRIPT = {  # python bench/...: flags appended (argparse keeps the last), output kept out of the repo
    "bench/fold.py": [
        "--models",
        "resnet18,mixnet_s",
        "--latency-models",
        "resnet18",
        "--batches",
        "1",
        "--repeats",
        "1",
    ],
}
SHRINK_WHEN = {  # extra overrides for commands that name one of these
    "hparams_search=": ["hydra.sweeper.n_trials=2"],
    "recipe=siamese_mnist": [
        "recipe.pretrain.epochs=1",
        "recipe.pretrain.pairs_per_epoch=512",
        "recipe.pretrain.val_pairs=256",
    ],
}
NOT_RUN = {
    "make test": "it is this test suite",
    "source .venv/bin/activate": "changes the calling shell only; the test runs the venv's entry points",
    "pip install torch==2.14.1 torchvision==0.29.1": "make install runs it (fresh-clone-check, bench/fresh_clone.sh)",
    "pip install -e '.[dev,export,lite0,scale]'": "make install runs it (fresh-clone-check, bench/fresh_clone.sh)",
    "export LTRAIN_ZOO_CATALOG=$PWD/zoo": "sets a variable; the zoo tests cover LTRAIN_ZOO_CATALOG",
    "ltrain -m cluster=slurm": "needs a SLURM cluster (the config composes in test_docs_commands)",
}
NEEDS = {"freeze.md": ["zoo.md"], "export.md": ["zoo.md"], "pretraining.md": [], "mc_dropout.md": []}


def _not_run_reason(cmd: DocCommand) -> str | None:
    text = " ".join(cmd.argv)
    return next((why for start, why in NOT_RUN.items() if text.startswith(" ".join(shlex.split(start)))), None)


class Sandbox:
    """A working directory, a zoo and an environment in which the docs' commands run."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {
            **os.environ,
            "LTRAIN_ZOO_HOME": str(root / "zoo"),
            "LTRAIN_RUNS": str(root / "runs"),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.env.pop("LTRAIN_ZOO_CATALOG", None)
        self.done: set[str] = set()

    def last_run(self) -> Path:
        runs = [p.parent for p in (self.root / "runs").glob("*/*/results.json") if p.parent.parent.name != "multirun"]
        assert runs, "no finished run yet for a runs/... placeholder"
        return max(runs, key=lambda p: p.stat().st_mtime)

    def last_sweep(self) -> Path:
        sweeps = list((self.root / "runs" / "multirun").glob("*/*"))
        assert sweeps, "no sweep yet for a runs/multirun/... placeholder"
        return max(sweeps, key=lambda p: p.stat().st_mtime)

    def photos(self) -> Path:
        folder = self.root / "photos"
        if not folder.exists():
            from PIL import Image

            from ltrain.data import MnistEmbedded

            dm = MnistEmbedded()
            dm.setup()
            folder.mkdir()
            for i in range(8):
                Image.fromarray(dm.splits["test"].images[i, 0].numpy()).save(folder / f"digit{i}.png")
        return folder

    def weights_file(self) -> Path:
        path = self.root / "weights.safetensors"
        if not path.exists():
            import timm
            from safetensors.torch import save_file

            save_file(timm.create_model("resnet18", in_chans=1).state_dict(), str(path))
        return path

    def concrete(self, arg: str) -> str:
        """``arg`` with its placeholder replaced by what the sandbox made."""
        if "runs/multirun/<date>/<time>" in arg:
            return arg.replace("runs/multirun/<date>/<time>", str(self.last_sweep()))
        if "runs/.../checkpoints/last.ckpt" in arg:
            return arg.replace("runs/.../checkpoints/last.ckpt", str(self.last_run() / "checkpoints" / "last.ckpt"))
        arg = re.sub(r"runs/(\.\.\.|<date>/<time>|\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d)", lambda _: str(self.last_run()), arg)
        arg = arg.replace("/my/photos", str(self.photos()))
        if arg.endswith("=weights.safetensors"):
            arg = arg.replace("weights.safetensors", str(self.weights_file()))
        return arg

    def argv(self, cmd: DocCommand) -> list[str]:
        """What runs: the command as documented, placeholders filled, shrinking overrides appended."""
        argv = [self.concrete(a) for a in cmd.argv]
        if argv[0] == "make":
            (line,) = [ln for ln in self._make_dry_run(argv[1:]) if "ltrain" in ln]
            return self.argv(DocCommand(cmd.doc, line, [Path(a).name if "/" in a else a for a in shlex.split(line)]))
        if argv[0] == "python":
            out = ["--out", str(self.root / Path(argv[1]).with_suffix(".md").name)] if argv[1] in SHRINK_SCRIPT else []
            return [sys.executable, *argv[1:], *SHRINK_SCRIPT.get(argv[1], []), *out]
        extra = list(SHRINK.get(argv[0], []))
        if (argv[0] == "ltrain" and argv[1:2] == ["groups"]) or "--cfg" in argv or "--help" in argv:
            extra = []
        for key, more in SHRINK_WHEN.items():
            if any(a.startswith(key) for a in argv):
                extra += more
        return [str(BIN / argv[0]), *argv[1:], *extra]

    def _make_dry_run(self, targets: list[str]) -> list[str]:
        out = subprocess.run(["make", "-s", "-n", *targets], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.splitlines()

    def run(self, cmd: DocCommand) -> subprocess.CompletedProcess:
        cwd = ROOT if cmd.argv[0] == "python" else self.root  # bench scripts run from the repo root
        return subprocess.run(
            self.argv(cmd), check=False, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=600
        )

    def run_doc(self, name: str) -> list[str]:
        """Run every command of one doc (and first the docs it needs); the failures, described."""
        for needed in NEEDS.get(name, []):
            if needed not in self.done:
                self.run_doc(needed)
        failures = []
        for cmd in doc_commands(next(d for d in DOCS if d.name == name)):
            if _not_run_reason(cmd):
                continue
            if cmd.argv[0] not in (*APPS, "ltrain-zoo", "ltrain-report", "make", "python"):
                failures.append(f"{cmd.where}: neither run nor listed in NOT_RUN (add it to one)")
                continue
            if "data=fashion_mnist" in cmd.argv and not _fashion_mnist_installed():
                continue
            out = self.run(cmd)
            text = out.stdout + out.stderr
            expect_error = any(ln.startswith("ltrain: error") for ln in cmd.shown_output)
            if (out.returncode != 0) != expect_error:
                failures.append(f"{cmd.where}: exit {out.returncode}\n{text[-3000:]}")
            elif "Traceback (most recent call last)" in text:
                failures.append(f"{cmd.where}: printed a traceback\n{text[-3000:]}")
            missing = [ln for ln in cmd.shown_output if ln.strip() not in ("", "...") and _norm(ln) not in _norm(text)]
            if missing:
                failures.append(
                    f"{cmd.where}: the doc shows lines the command no longer prints: {missing}\n{text[-2000:]}"
                )
        self.done.add(name)
        return failures


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("docs"))


ORDER = ["zoo.md", *[d.name for d in DOCS if d.name != "zoo.md"]]


@pytest.mark.slow
@pytest.mark.parametrize("doc", ORDER)
def test_every_command_of_the_doc_runs(sandbox, doc):
    if doc in sandbox.done:  # already run as another doc's prerequisite
        return
    failures = sandbox.run_doc(doc)
    assert not failures, "\n\n".join(failures)


def test_every_documented_command_is_run_or_listed_with_a_reason():
    """NOT_RUN names only commands the docs still show, so the list cannot grow stale either."""
    shown = [" ".join(c.argv) for d in DOCS for c in doc_commands(d)]
    stale = [c for c in NOT_RUN if not any(s.startswith(" ".join(shlex.split(c))) for s in shown)]
    assert not stale, f"NOT_RUN lists commands no doc shows any more: {stale}"
