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
    assert a["zoo_entry"] == "digits04" and entry.description == "digits 0-4"
    assert entry.metrics["test_acc"]["values"] == [a["test_acc"]] and entry.seeds == [0]
    assert entry.dataset["class_names"] == ["0", "1", "2", "3", "4"] and entry.config["zoo"]["push"] == "digits04"
    transform = a["datamodule"].splits["test"].transform
    assert entry.preprocessing["mean"] == list(transform.mean) and entry.preprocessing["std"] == list(transform.std)
    x, _ = next(iter(a["datamodule"].test_dataloader()))
    with torch.no_grad():
        assert torch.equal(zoo.load_model("digits04")(x), a["module"].model.eval()(x))  # the tested weights

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
    assert child.parent == "digits04" and child.pretrained == "zoo:digits04" and b["zoo_entry"] == "digits59"
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
