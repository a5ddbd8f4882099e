"""ltrain-export: the composed config, each model source (timm name, checkpoint, zoo entry), ONNX checked in ORT."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from killpoint import spawn, tail
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ltrain.errors import LtrainError
from ltrain.export.onnx import onnx_op_counts, torch_export_batch_norms
from ltrain.export.pipeline import export, export_model, load_source
from ltrain.export.stats import randomize_batchnorm_
from ltrain.paths import conf_dir

FAST = ["latency.repeats=1", "latency.warmup=0", "input_size=[32,32]"]


def export_config(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("export", overrides=[*FAST, *overrides])


def test_export_config_composes_and_defaults_to_folding():
    cfg = export_config("source=resnet18")
    assert cfg.fold is True and cfg.onnx.enabled is True and cfg.tolerance == 1e-4
    assert cfg.model.name == "resnet18" and cfg.source == "resnet18"
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_timm_model_exports_folded_to_onnx_that_onnx_runtime_runs_like_pytorch(tmp_path):
    """The default suite's ONNX proof: BatchNormAct2d model -> folded -> ONNX (batch 1) -> ORT on batch 2."""
    cfg = export_config("source=test_efficientnet", "torch_export=true", "compare_unfolded=false")
    results = export(cfg, tmp_path)
    fold = results["fold"]
    assert fold["folded"] == fold["total"] > 0 and fold["rel_diff"] <= 1e-4
    onnx_file = results["onnx"]["files"]["model"]
    assert onnx_file["batch_norm_nodes"] == 0 and onnx_op_counts(tmp_path / "model.onnx")["Conv"] > 0
    assert onnx_file["max_abs_diff"] <= 1e-4 and onnx_file["output_scale"] > 0
    assert results["torch_export"]["batch_norm_ops"] == 0 and (tmp_path / "model.pt2").is_file()
    assert set(results["onnx"]["ort_latency_ms"]["1"]) == set(results["eager_latency_ms"]["1"]) == {"model"}
    saved = json.loads((tmp_path / "export.json").read_text())
    assert saved["fold"]["folded"] == fold["folded"] and saved["source"].startswith("test_efficientnet")


def test_export_refuses_an_onnx_file_that_differs_from_pytorch(tmp_path):
    """The ORT check can fail: with a zero tolerance the (tiny, float) ONNX Runtime difference is refused."""
    model = randomize_batchnorm_(
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3)
        )
    )
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_model(model, torch.randn(1, 3, 16, 16), tmp_path, fold=False, tolerance=0.0, latency_repeats=1)


@pytest.mark.slow
def test_export_times_unfolded_and_folded_side_by_side(tmp_path):
    results = export(export_config("source=resnet18", "latency.batch_sizes=[1,8]", "latency.repeats=3"), tmp_path)
    for batch in ("1", "8"):
        assert set(results["onnx"]["ort_latency_ms"][batch]) == {"unfolded", "folded"}
    files = results["onnx"]["files"]
    print({k: (v["bytes"], v["batch_norm_nodes"], v["max_abs_diff"]) for k, v in files.items()}, results["onnx"])


def test_unfolded_model_keeps_batch_norm_in_torch_export():
    """The torch.export count is real: an unfolded model shows its BN ops there."""
    model = randomize_batchnorm_(timm.create_model("test_resnet")).eval()
    assert torch_export_batch_norms(model, torch.randn(1, 3, 32, 32)) == sum(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )


def test_checkpoint_source_rebuilds_the_architecture_with_its_classes(tmp_path):
    trained = randomize_batchnorm_(timm.create_model("test_resnet", num_classes=7, in_chans=1)).eval()
    path = tmp_path / "weights.safetensors"
    save_file(trained.state_dict(), str(path))
    cfg = export_config(f"source={path}", "model.name=test_resnet", "in_chans=1", "onnx.enabled=false")
    model, _shape, _origin = load_source(cfg)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))  # classes inferred from the checkpoint's classifier: 7
    results = export(cfg, tmp_path / "out")
    assert results["source"] == str(path) and results["fold"]["folded"] == results["fold"]["total"]


def test_checkpoint_with_other_classes_than_asked_is_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=7).state_dict(), str(path))
    with pytest.raises(LtrainError, match="num_classes"):
        load_source(export_config(f"source={path}", "model.name=test_resnet", "num_classes=3"))


def test_zoo_entry_source_loads_the_catalogued_model(tmp_path):
    from ltrain.zoo import Zoo

    trained = randomize_batchnorm_(timm.create_model("test_resnet", num_classes=4)).eval()
    Zoo().push(trained, "tiny", model_cfg={"name": "test_resnet"}, num_classes=4, input_shape=[3, 32, 32])
    cfg = export_config("source=zoo:tiny", "onnx.enabled=false", "input_size=null")
    model, shape, origin = load_source(cfg)
    assert shape == (3, 32, 32) and origin == "zoo:tiny"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x))
    assert export(cfg, tmp_path)["input_shape"] == [3, 32, 32]


def test_unknown_model_name_is_a_clear_error_with_close_matches():
    with pytest.raises(LtrainError, match="resnet18"):
        load_source(export_config("source=resnet18x"))


@pytest.mark.slow  # a fresh interpreter importing torch, timm and Hydra: slow on a shared machine
def test_cli_prints_a_clean_error_for_bad_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ltrain.cli.export", "source=resnet18x", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2 and "unknown model 'resnet18x'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # a real (tiny) training run, then the export: ~20 s on an idle 2-core machine, minutes when shared
def test_a_low_latency_preset_run_exports_with_every_batch_norm_folded(tmp_path, cfg_factory):
    """``ltrain preset=low_latency`` then ``ltrain-export source=<run dir>``: the run's own model config and input
    shape rebuild the net from its best checkpoint, and every BN (before the activation) folds into its Linear."""
    from ltrain.train import train

    cfg = cfg_factory(
        "preset=low_latency",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1",
        "plots=false",
    )
    run = tmp_path / "run"
    train(cfg, run)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)  # what the ltrain CLI (Hydra) writes beside the run
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    results = export(export_config(f"source={run}", "input_size=null", "compare_unfolded=false"), tmp_path / "export")
    assert results["input_shape"] == [1, 28, 28]
    assert results["fold"]["total"] == len(cfg.model.hidden) == results["fold"]["folded"]
    assert results["onnx"]["files"]["model"]["batch_norm_nodes"] == 0
    assert results["onnx"]["files"]["model"]["max_abs_diff"] <= 1e-4


def test_a_failed_check_leaves_no_export_behind(tmp_path):
    """Atomic export: the ONNX file was written, ONNX Runtime's check refused it, and nothing is left in place."""
    model = randomize_batchnorm_(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)))
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_model(model, torch.randn(1, 3, 16, 16), tmp_path, fold=False, tolerance=0.0, latency_repeats=1)
    assert list(tmp_path.iterdir()) == []


def test_sigkill_during_ltrain_export_leaves_the_previous_export_or_the_whole_new_one(tmp_path):
    """Killed once an ONNX file exists anywhere in the output folder: model.onnx only ever appears with export.json."""
    import os
    import signal
    import time
    from pathlib import Path

    out = tmp_path / "out"
    victim = spawn(
        [str(Path(sys.executable).parent / "ltrain-export"), "source=resnet10t", *FAST, f"hydra.run.dir={out}"]
    )
    while not list(out.rglob("*.onnx")):  # the kill point: the first ONNX file written, wherever it is
        assert victim.poll() is None, tail(victim)
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    if (out / "model.onnx").exists():  # the export finished before the kill: then it is whole
        assert (out / "export.json").is_file()
    else:
        assert not (out / "export.json").exists() and not list(out.glob("*.onnx"))
    cfg = export_config("source=resnet10t")
    export(cfg, out)  # the next export into the same folder clears the dead one's staging and lands whole
    left = sorted(p.name for p in out.iterdir() if p.suffix != ".log" and p.name != ".hydra")  # Hydra's own files
    assert left == ["export.json", "model.onnx", "model_unfolded.onnx"], left
