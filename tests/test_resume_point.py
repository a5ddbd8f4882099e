"""Where a run writes and which checkpoint it continues from (ltrain.resume), on run directories made by hand.

The real composed config, directories laid out as ``ltrain`` leaves them (config.yaml, checkpoints/
last.ckpt, best.ckpt, epoch files, results.json); no Trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ltrain.checkpoint_io import ChecksummedCheckpointIO
from ltrain.errors import LtrainError
from ltrain.resume import check_checkpoint, find_resume_point
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def base():
    return compose_config()


def variant(cfg, **changes):
    out = cfg.copy()
    for key, value in changes.items():
        OmegaConf.update(out, key, value, merge=False)
    return out


def make_run(directory: Path, cfg, checkpoints=("last.ckpt",), finished=False, age: float = 0.0) -> Path:
    """A run directory as ltrain leaves it; ``age`` seconds subtracted from its last.ckpt's mtime."""
    (directory / "checkpoints").mkdir(parents=True)
    OmegaConf.save(variant(cfg, resume=None), directory / "config.yaml")
    for name in checkpoints:
        (directory / "checkpoints" / name).write_bytes(name.encode())
    if finished:
        (directory / "results.json").write_text("{}")
    last = directory / "checkpoints" / "last.ckpt"
    if last.exists():
        t = 1_700_000_000 - age
        os.utime(last, (t, t))
    return directory


def runs() -> Path:
    return Path(os.environ["LTRAIN_RUNS"])  # the test's own (conftest)


# --- resume=null / PATH ---------------------------------------------------------------------------


def test_a_new_run_in_an_empty_directory_starts_from_scratch(base, tmp_path):
    assert find_resume_point(base, tmp_path / "new") == (tmp_path / "new", None)


def test_resume_path_is_taken_as_given_and_a_missing_one_refused(base, tmp_path):
    ckpt = make_run(tmp_path / "old", base, ["epoch=1.ckpt"]) / "checkpoints" / "epoch=1.ckpt"
    assert find_resume_point(variant(base, resume=str(ckpt)), tmp_path / "new") == (tmp_path / "new", ckpt)
    with pytest.raises(LtrainError, match="no such checkpoint file"):
        find_resume_point(variant(base, resume=str(tmp_path / "nope.ckpt")), tmp_path / "new")


def test_a_new_run_into_a_directory_holding_one_is_refused(base, tmp_path):
    run = make_run(tmp_path / "run", base)
    with pytest.raises(LtrainError, match="already holds a run"):
        find_resume_point(base, run)


# --- resume=auto in the run's own directory --------------------------------------------------------


def test_own_run_continues_from_last_ckpt_not_best_or_epoch_files(base, tmp_path):
    run = make_run(tmp_path / "run", base, ["epoch=3.ckpt", "best.ckpt", "last.ckpt", "epoch=4.ckpt"])
    assert find_resume_point(variant(base, resume="auto"), run) == (run, run / "checkpoints" / "last.ckpt")


def test_own_run_stopped_before_last_ckpt_restarts_from_scratch_in_place(base, tmp_path):
    # best.ckpt and a half-written temporary last.ckpt are not resume points
    run = make_run(tmp_path / "run", base, ["best.ckpt", ".last.ckpt.x1y2.tmp"])
    assert find_resume_point(variant(base, resume="auto"), run) == (run, None)


def test_own_finished_run_is_never_reopened(base, tmp_path):
    run = make_run(tmp_path / "run", base, finished=True)
    for resume in ("auto", None, str(run / "checkpoints" / "last.ckpt")):
        with pytest.raises(LtrainError, match=r"finished run \(results.json\)"):
            find_resume_point(variant(base, resume=resume), run)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("seed", 7, "seed: 0 -> 7"),
        ("loss", "mse", "loss: 'cross_entropy' -> 'mse'"),
        ("model.hidden", [9], "model.hidden: [100, 100, 100, 100, 100] -> [9]"),
    ],
)
def test_own_run_with_another_identity_is_refused_naming_the_keys(base, tmp_path, key, value, shown):
    run = make_run(tmp_path / "run", base)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(LtrainError, match="holds another run") as err:
        find_resume_point(variant(base, resume="auto", **{key: value}), run)
    assert shown in str(err.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written


def test_own_run_continues_with_a_longer_trainer_schedule(base, tmp_path):
    run = make_run(tmp_path / "run", base)
    cfg = variant(base, resume="auto", **{"trainer.max_epochs": 9})
    assert find_resume_point(cfg, run) == (run, run / "checkpoints" / "last.ckpt")


def test_own_run_with_a_damaged_config_is_refused_naming_the_file(base, tmp_path):
    run = make_run(tmp_path / "run", base)
    (run / "config.yaml").write_text("model: [unclosed\n  seed: {")
    with pytest.raises(LtrainError, match="saved config is damaged") as err:
        find_resume_point(variant(base, resume="auto"), run)
    assert str(run / "config.yaml") in str(err.value)


# --- resume=auto from a fresh directory: search of $LTRAIN_RUNS -----------------------------------


def test_auto_picks_the_newest_unfinished_run_with_this_exact_config(base, tmp_path):
    old = make_run(runs() / "a", base, age=300)
    newest_match = make_run(runs() / "b", base, ["best.ckpt", "last.ckpt"], age=100)
    make_run(runs() / "c", variant(base, **{"trainer.max_epochs": 9}), age=0)  # newer, other config
    orphan = runs() / "d" / "checkpoints"  # a last.ckpt with no config.yaml beside it
    orphan.mkdir(parents=True)
    (orphan / "last.ckpt").write_bytes(b"x")

    got = find_resume_point(variant(base, resume="auto"), tmp_path / "fresh")
    assert got == (newest_match, newest_match / "checkpoints" / "last.ckpt")
    os.utime(old / "checkpoints" / "last.ckpt", (1_800_000_000, 1_800_000_000))  # now the old one is newest
    got = find_resume_point(variant(base, resume="auto"), tmp_path / "fresh")
    assert got == (old, old / "checkpoints" / "last.ckpt")


def test_auto_skips_a_matching_run_with_only_a_half_written_checkpoint(base, tmp_path):
    older = make_run(runs() / "older", base, age=500)
    make_run(runs() / "newer", base, [".last.ckpt.q9.tmp", "best.ckpt"])
    got = find_resume_point(variant(base, resume="auto"), tmp_path / "fresh")
    assert got == (older, older / "checkpoints" / "last.ckpt")


def test_auto_does_not_reopen_a_finished_match_and_starts_a_new_run(base, tmp_path):
    make_run(runs() / "unfinished_older", base, age=500)
    make_run(runs() / "finished_newer", base, finished=True, age=10)
    with pytest.warns(UserWarning, match="has finished"):
        got = find_resume_point(variant(base, resume="auto"), tmp_path / "fresh")
    assert got == (tmp_path / "fresh", None)


def test_auto_with_nothing_matching_starts_afresh(base, tmp_path):
    make_run(runs() / "other_seed", variant(base, seed=3))
    assert find_resume_point(variant(base, resume="auto"), tmp_path / "fresh") == (tmp_path / "fresh", None)


# --- check_checkpoint: the chosen file itself ------------------------------------------------------


def net(width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def save(module: nn.Module, path: Path) -> Path:
    ChecksummedCheckpointIO().save_checkpoint({"state_dict": module.state_dict(), "epoch": 1}, path)
    return path


def test_a_sound_checkpoint_of_this_architecture_passes(tmp_path):
    check_checkpoint(save(net(), tmp_path / "last.ckpt"), net())


def test_a_damaged_checkpoint_is_refused_naming_it(tmp_path):
    path = save(net(), tmp_path / "last.ckpt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LtrainError, match="corrupt or truncated") as err:
        check_checkpoint(path, net())
    assert str(path) in str(err.value)


def test_a_truncated_checkpoint_without_sidecar_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": net().state_dict()}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(LtrainError, match="corrupt or truncated"):
        check_checkpoint(path, net())


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_keys(tmp_path):
    path = save(net(width=8), tmp_path / "last.ckpt")
    with pytest.raises(LtrainError, match="another architecture") as err:
        check_checkpoint(path, net(width=4))
    assert "shape mismatch ['0.bias', '0.weight', '2.weight']" in str(err.value)
    deeper = nn.Sequential(*net(), nn.Linear(2, 2))
    with pytest.raises(LtrainError, match=r"missing \['3.bias', '3.weight'\]"):
        check_checkpoint(save(net(), tmp_path / "b.ckpt"), deeper)
