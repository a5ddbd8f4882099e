"""``ltrain ... zoo.push=NAME``: a real run ends in the zoo with its metrics, config and lineage."""

from __future__ import annotations

import pytest
import torch

from ltrain.cli.zoo import run as zoo_cli
from ltrain.errors import LtrainError
from ltrain.train import train
from ltrain.zoo import Zoo

TINY = [
    "model.hidden=[32,32]",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "plots=false",
]


def test_a_run_pushes_its_model_and_a_fine_tuned_run_records_its_parent(cfg_factory, tmp_path, capsys):
    a = train(
        cfg_factory(*TINY, "data.classes=[0,1,2,3,4]", "zoo.push=digits04", "zoo.description=digits 0-4"),
        tmp_path / "a",
    )
    zoo = Zoo()
    entry = zoo.get("digits04")
    assert a.results["zoo_entry"] == "digits04" and entry.description == "digits 0-4"
    assert entry.metrics["test_acc"]["values"] == [a.results["test_acc"]] and entry.seeds == [0]
    assert entry.dataset["class_names"] == ["0", "1", "2", "3", "4"] and entry.config["zoo"]["push"] == "digits04"
    transform = a.datamodule.splits["test"].transform
    assert entry.preprocessing["mean"] == list(transform.mean) and entry.preprocessing["std"] == list(transform.std)
    x, _ = next(iter(a.datamodule.test_dataloader()))
    with torch.no_grad():
        assert torch.equal(zoo.load_model("digits04")(x), a.module.model.eval()(x))  # the tested weights

    with pytest.raises(LtrainError, match=r"zoo.push=digits04: that entry exists"):  # before any training
        train(cfg_factory(*TINY, "zoo.push=digits04"), tmp_path / "again")

    b = train(
        cfg_factory(
            *TINY,
            "data.classes=[5,6,7,8,9]",
            "data.train_per_class=20",
            "model.pretrained=zoo:digits04",
            "zoo.push=digits59",
        ),
        tmp_path / "b",
    )
    child = zoo.get("digits59")
    assert child.parent == "digits04" and child.pretrained == "zoo:digits04" and b.results["zoo_entry"] == "digits59"
    assert zoo.lineage("digits59") == ["digits59", "digits04"]

    # the CLI pushes a finished run too, pooling the metrics of the runs given
    assert zoo_cli(["push", "digits04_cli", "--run", str(tmp_path / "a"), "--more-runs", str(tmp_path / "a")]) == 0
    pooled = zoo.get("digits04_cli")
    assert pooled.metrics["test_acc"]["n"] == 2 and pooled.seeds == [0, 0]
    assert pooled.preprocessing == entry.preprocessing and pooled.dataset == entry.dataset
    assert torch.equal(
        zoo.load_state_dict("digits04_cli")["head.weight"], zoo.load_state_dict("digits04")["head.weight"]
    )
    capsys.readouterr()
    assert zoo_cli(["show", "digits59"]) == 0
    assert "lineage:     digits59 <- digits04  (started from zoo:digits04)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.ddp
def test_under_ddp_only_rank_zero_pushes(tmp_path):
    """2 CPU processes (gloo): one entry lands; a second writer would fail the run with 'entry exists'."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ltrain.models.pretrained import read_weights_file

    ltrain_bin = Path(sys.executable).parent / "ltrain"
    env = {**os.environ, "LTRAIN_RUNS": str(tmp_path / "runs")}
    out = subprocess.run(
        [
            str(ltrain_bin),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "data.batch_size=32",
            "model.hidden=[32]",
            "plots=false",
            "zoo.push=ddp_entry",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    zoo = Zoo()
    assert zoo.names() == ["ddp_entry"] and zoo.verify("ddp_entry")[0].ok
    assert len(list((zoo.home / "models" / "ddp_entry").iterdir())) == 1
    (best,) = (tmp_path / "runs").rglob("best.ckpt")
    stored, trained = zoo.load_state_dict("ddp_entry"), read_weights_file(best)
    assert stored.keys() == trained.keys() and all(torch.equal(stored[k], trained[k]) for k in stored)


# ---- nothing in the zoo is replaced unless asked with a real boolean; a push that cannot land fails first ----
def _tiny_entry(name: str) -> None:
    from ltrain.models import build_mlp

    Zoo().push(build_mlp(784, 10, hidden=[4]), name, model_cfg={"name": "mlp", "hidden": [4]}, input_shape=[1, 28, 28])


def _nothing_trained(run_dir) -> None:
    assert not run_dir.exists() or not list(run_dir.rglob("*.ckpt")), "training ran before the zoo check"


@pytest.mark.parametrize("word", ["no", "false_", "0", "yes"])
def test_zoo_overwrite_must_be_a_real_boolean(cfg_factory, tmp_path, word):
    _tiny_entry("taken")
    before = Zoo().get("taken")
    with pytest.raises(LtrainError, match=rf"zoo.overwrite='{word}' is not (a boolean|valid: expected true or false)"):
        train(cfg_factory(*TINY, "zoo.push=taken", f"zoo.overwrite='{word}'"), tmp_path / "run")
    assert Zoo().get("taken") == before
    _nothing_trained(tmp_path / "run")


def test_a_zoo_home_that_is_a_file_fails_before_training(cfg_factory, tmp_path, monkeypatch):
    home = tmp_path / "not_a_folder"
    home.write_text("a file where the store should be")
    monkeypatch.setenv("LTRAIN_ZOO_HOME", str(home))
    with pytest.raises(LtrainError, match=rf"{home} is a file, not a folder"):
        train(cfg_factory(*TINY, "zoo.push=entry"), tmp_path / "run")
    _nothing_trained(tmp_path / "run")


class FileInTheWay(__import__("lightning").Callback):
    """Puts a file where the zoo store will be created, after the pre-training checks passed (a full disk, a
    store unmounted mid-run: the push fails only at the end)."""

    def on_fit_end(self, trainer, pl_module) -> None:
        import os
        from pathlib import Path

        Path(os.environ["LTRAIN_ZOO_HOME"]).write_text("in the way")


def test_a_push_that_fails_at_the_end_leaves_a_finished_run_that_ltrain_zoo_push_accepts(
    cfg_factory, tmp_path, monkeypatch
):
    import os

    with pytest.raises(LtrainError, match=r"ltrain-zoo push late --run") as err:
        train(
            cfg_factory(*TINY, "zoo.push=late", f"+callbacks.block._target_={__name__}.FileInTheWay"),
            tmp_path / "run",
        )
    assert "the run finished" in str(err.value)
    assert (tmp_path / "run" / "results.json").is_file()
    os.remove(os.environ["LTRAIN_ZOO_HOME"])  # the user clears the way, then pushes the finished run
    assert zoo_cli(["push", "late", "--run", str(tmp_path / "run")]) == 0
    assert Zoo().get("late").metrics["test_acc"]["n"] == 1


def test_rerunning_a_transfer_recipe_adds_an_entry_and_never_replaces_model_a(cfg_factory):
    from ltrain.publish import check_push
    from ltrain.recipes.pretraining import zoo_name as pretext_name
    from ltrain.recipes.transfer import zoo_name

    _tiny_entry("mnist_transfer_a_s0")  # what the first run of the recipe pushed
    before = Zoo().get("mnist_transfer_a_s0")
    cfg = cfg_factory("recipe=mnist_transfer")
    assert zoo_name(cfg) == "mnist_transfer_a_s0_2"  # `make demo` twice: a second entry, the first one kept
    check_push(cfg, zoo_name(cfg), by="recipe=mnist_transfer")  # free, so the rerun starts
    _tiny_entry("mnist_transfer_a_s0_2")
    assert zoo_name(cfg) == "mnist_transfer_a_s0_3"
    assert Zoo().get("mnist_transfer_a_s0") == before
    assert zoo_name(cfg_factory("recipe=mnist_transfer", "zoo.overwrite=true")) == "mnist_transfer_a_s0"  # asked
    named = cfg_factory("recipe=mnist_transfer", "zoo.push=mnist_transfer_a_s0")  # a name the user chose: refused
    with pytest.raises(LtrainError, match=r"pushes its model to the zoo as mnist_transfer_a_s0, which exists"):
        check_push(named, zoo_name(named), by="recipe=mnist_transfer")
    _tiny_entry("siamese_mnist_s0")
    assert pretext_name(cfg_factory("recipe=siamese_mnist")) == ("siamese_mnist_s0_2", False)
