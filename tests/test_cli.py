"""The console scripts as a user runs them: help lists the groups, bad input exits non-zero with a hint."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str, cwd: str = "/tmp", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_help_lists_the_config_groups():
    out = run("ltrain", "--help")
    assert out.returncode == 0
    for group in ("model", "data", "optimizer", "scheduler", "trainer", "preset", "recipe", "freeze"):
        assert f"\n{group}: " in out.stdout, group


def test_cfg_job_prints_the_composed_config():
    out = run("ltrain", "--cfg", "job", "model.hidden=[10,10]")
    assert out.returncode == 0 and "hidden:\n  - 10\n  - 10" in out.stdout


def test_cfg_job_shows_the_mixup_keys():
    out = run("ltrain", "--cfg", "job", "mixup=default", "mixup.cutmix_alpha=0")
    assert out.returncode == 0, out.stderr
    for line in (
        "mixup:\n  _target_: ltrain.modules.BatchMixup",
        "  mixup_alpha: 0.8",
        "  cutmix_alpha: 0",
        "  seed: ${seed}",
    ):
        assert line in out.stdout, line


def test_unknown_model_exits_nonzero_naming_close_matches():
    out = run("ltrain", "model.name=resnet_18x")
    assert out.returncode != 0
    assert "resnet18" in out.stderr and "Traceback" not in out.stderr


def test_missing_fashion_mnist_exits_nonzero_saying_how_to_get_it(tmp_path):
    out = run("ltrain", "data=fashion_mnist", "data.root=/nonexistent", f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in out.stderr


def test_unknown_config_key_is_refused():
    out = run("ltrain", "model.hiden=[10]")
    assert out.returncode != 0 and "hiden" in out.stderr


def test_the_wheel_ships_the_configs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if out.returncode != 0 and "hatchling" in out.stderr:
        pytest.skip("hatchling is not installed in this environment")
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("ltrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ltrain/conf/config.yaml" in names
    shipped = {n for n in names if n.startswith("ltrain/conf/") and n.endswith(".yaml")}
    on_disk = {"ltrain/conf/" + str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == on_disk
