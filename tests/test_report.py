"""A multirun over seeds and ltrain-report: the table's numbers are recomputed from the run directories."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_five_seed_multirun_and_report_table_match_the_runs(tmp_path):
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [
            str(BIN / "ltrain"),
            "-m",
            "seed=0,1,2,3,4",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=8",
            "trainer.enable_progress_bar=false",
            "model.hidden=[32]",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    runs = sorted(sweep.glob("*/results.json"))
    assert len(runs) == 5
    accs = [json.loads(p.read_text())["test_acc"] for p in runs]
    assert len(set(accs)) > 1  # different seeds really trained differently

    rep = subprocess.run(
        [str(BIN / "ltrain-report"), f"dir={sweep}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rep.returncode == 0, rep.stderr
    summary = json.loads((sweep / "report.json").read_text())["arms"]["run"]["test_acc"]
    assert summary["n"] == 5
    assert abs(summary["mean"] - statistics.fmean(accs)) < 1e-12
    assert abs(summary["std"] - statistics.stdev(accs)) < 1e-12
    row = f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}"
    assert row in (sweep / "report.md").read_text()
    assert (sweep / "report.png").stat().st_size > 1000


def test_report_reads_recipe_arms(tmp_path):
    from ltrain.report import write_report

    for seed, (a, b) in enumerate([(0.5, 0.7), (0.6, 0.9)]):
        d = tmp_path / str(seed)
        d.mkdir()
        (d / "results.json").write_text(
            json.dumps({"seed": seed, "arms": {"scratch": {"test_acc": a}, "transfer": {"test_acc": b}}})
        )
    out = write_report(tmp_path)
    assert out["summary"]["scratch"]["test_acc"]["mean"] == 0.55
    assert abs(out["summary"]["transfer"]["test_acc"]["std"] - statistics.stdev([0.7, 0.9])) < 1e-12


def test_report_on_an_empty_directory_says_where_to_point_it(tmp_path):
    out = subprocess.run(
        [str(BIN / "ltrain-report"), f"dir={tmp_path}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode != 0 and "no results.json" in out.stderr


def _fake_run(root: Path, name: str, overrides: list[str], test_acc: float) -> None:
    """A run directory as ``ltrain`` leaves it: the composed config and a results.json."""
    from omegaconf import OmegaConf

    from ltrain.config import compose_config

    run = root / name
    run.mkdir(parents=True)
    cfg = compose_config(*overrides)
    OmegaConf.save(cfg, run / "config.yaml")
    (run / "results.json").write_text(json.dumps({"seed": cfg.seed, "model": "mlp", "test_acc": test_acc}))


def test_report_pools_only_over_seeds_and_names_what_differs(tmp_path):
    from ltrain.report import write_report

    _fake_run(tmp_path, "0", ["seed=0", "optimizer.lr=0.01"], 0.90)
    _fake_run(tmp_path, "1", ["seed=1", "optimizer.lr=0.01"], 0.92)
    _fake_run(tmp_path, "2", ["seed=0", "optimizer.lr=0.1"], 0.50)
    _fake_run(tmp_path, "3", ["seed=0", "optimizer.lr=0.1", "trainer.max_epochs=3"], 0.60)
    out = write_report(tmp_path)
    summary = out["summary"]
    assert set(summary) == {
        "run [optimizer.lr=0.01, trainer.max_epochs=10]",
        "run [optimizer.lr=0.1, trainer.max_epochs=10]",
        "run [optimizer.lr=0.1, trainer.max_epochs=3]",
    }
    pooled = summary["run [optimizer.lr=0.01, trainer.max_epochs=10]"]["test_acc"]
    assert pooled["n"] == 2 and pooled["mean"] == statistics.fmean([0.90, 0.92])
    assert "rows differ in optimizer.lr, trainer.max_epochs" in out["markdown"]
    single = summary["run [optimizer.lr=0.1, trainer.max_epochs=3]"]["test_acc"]
    assert single["n"] == 1 and single["std"] is None
    row = next(line for line in out["markdown"].splitlines() if "max_epochs=3]" in line)
    assert "0.6000" in row and "±" not in row  # one run: no spread printed


def test_report_names_a_damaged_results_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text('{"seed": 0, "test_acc": 0.9')  # cut short
    out = subprocess.run(
        [str(BIN / "ltrain-report"), f"dir={tmp_path}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 2 and f"cannot read {tmp_path / 'a' / 'results.json'}" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_seed_key_that_copies_the_run_seed_does_not_split_the_pool_but_a_swept_one_does(tmp_path):
    """mc.seed follows the run's seed (recipe=mc_fashion saves it resolved): five seeds are one row, while
    a sweep of mc.seed at one training seed is a difference worth its own rows."""
    from ltrain.report import write_report

    for s in range(3):
        _fake_run(tmp_path / "pooled", str(s), ["recipe=mc_fashion", f"seed={s}", f"mc.seed={s}"], 0.8 + s / 100)
    assert set(write_report(tmp_path / "pooled")["summary"]) == {"run"}
    for m in range(2):
        _fake_run(tmp_path / "swept", str(m), ["recipe=mc_fashion", "seed=0", f"mc.seed={m + 5}"], 0.8)
    assert "rows differ in mc.seed" in write_report(tmp_path / "swept")["markdown"]


def test_a_key_absent_in_older_runs_and_null_in_newer_ones_does_not_split_the_pool(tmp_path):
    from ltrain.report import config_groups

    old = {"optimizer.lr": "0.01"}
    new = {"optimizer.lr": "0.01", "data.test_per_class": "null"}
    assert config_groups([old, new]) == (["", ""], [])
    assert config_groups([old, {**new, "data.test_per_class": "200"}])[1] == ["data.test_per_class"]
