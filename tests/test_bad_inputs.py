"""The bad-input audit: every row of docs/bad-inputs.md is a case here.

Each case runs the real entry point with the bad input, expects an LtrainError (or a non-zero exit)
whose message contains the row's text, and checks that no results.json or checkpoint was left behind.
Regenerate the document from this table with:  python tests/test_bad_inputs.py > docs/bad-inputs.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ltrain.config import compose_config

SHRINK = ("trainer.enable_progress_bar=false", "trainer.max_epochs=1", "trainer.limit_train_batches=2")

# (id, what the user did, overrides, a fragment of the message they get)
TRAIN_CASES = [
    ("unknown_model", "a misspelt timm model", ["model.name=resnet_18x"], "Close matches: resnet18"),
    ("unknown_activation", "an unknown activation", ["model.activation=relux"], "unknown activation 'relux'"),
    ("unknown_init", "an unknown initialiser", ["model.init=xavier_gauss"], "unknown initialiser 'xavier_gauss'"),
    (
        "bad_bn_place",
        "batch norm in an impossible place",
        ["model.batch_norm=middle"],
        "model.batch_norm='middle' is not one of",
    ),
    ("dropout_out_of_range", "a dropout rate of 1.5", ["model.dropout=1.5"], "model.dropout=1.5 must be in [0, 1)"),
    (
        "missing_dataset",
        "Fashion-MNIST files not there",
        ["data=fashion_mnist", "data.root=/nonexistent"],
        "apt-get install dataset-fashion-mnist",
    ),
    ("empty_class_subset", "an empty class subset", ["data.classes=[]"], "data.classes is empty"),
    ("absent_class", "a class the data does not have", ["data.classes=[3,12]"], "which the dataset does not have"),
    ("repeated_class", "a class listed twice", ["data.classes=[3,3]"], "repeats a class"),
    (
        "cap_too_large",
        "a per-class cap larger than available",
        ["data.train_per_class=1000"],
        "fewer than the cap of 1000",
    ),
    ("bad_augment", "an unknown augmentation", ["data.augment=mixup"], "data.augment='mixup' is not one of"),
    ("zero_batch", "a batch size of 0", ["data.batch_size=0"], "data.batch_size must be positive"),
    (
        "bad_split",
        "split fractions that leave no training data",
        ["data.val_fraction=0.6", "data.test_fraction=0.5"],
        "must be >= 0 and sum to less than 1",
    ),
    (
        "image_folder_missing",
        "an image folder that does not exist",
        ["data=image_folder", "data.root=/nonexistent"],
        "is not a folder",
    ),
    (
        "resume_missing_file",
        "resume from a checkpoint that is not there",
        ["resume=/nonexistent/last.ckpt"],
        "no such checkpoint file",
    ),
    (
        "missing_zoo_entry",
        "weights from a zoo entry that does not exist",
        ["model.pretrained=zoo:no_such_model"],
        "no zoo entry 'no_such_model'",
    ),
    (
        "unknown_weight_source",
        "a misspelt weight source",
        ["model=timm", "model.name=tf_efficientnet_lite0", "model.pretrained=imagenet_lite"],
        "Did you mean imagenet_lite0",
    ),
    (
        "lite0_on_other_arch",
        "ImageNet Lite0 weights for another architecture",
        ["model=timm", "model.name=resnet18", "model.pretrained=imagenet_lite0"],
        "holds weights for tf_efficientnet_lite0 only",
    ),
    ("bad_zoo_name", "an invalid zoo entry name", ["zoo.push=my/model"], "zoo entry name 'my/model' is not valid"),
    (
        "impossible_freeze_spec",
        "a freeze phase with more groups than the model has",
        ["freeze=default", "freeze.phases.1.trainable=top:99"],
        "top:99",
    ),
    (
        "preset_contradiction",
        "an override that breaks the chosen preset",
        ["preset=self_normalizing", "model.batch_norm=before"],
        "preset=self_normalizing cannot be honoured",
    ),
    (
        "bad_scheduler_interval",
        "a scheduler stepping at an unknown interval",
        ["scheduler=plateau", "scheduler.interval=batch"],
        "scheduler.interval='batch' is not one of",
    ),
    (
        "pruning_without_storage",
        "Optuna pruning with no study storage to report to",
        ["+callbacks.optuna_pruning={_target_:ltrain.callbacks.OptunaPruning,storage:null,study_name:lr_coarse}"],
        "Optuna pruning needs the sweep's study in a storage the jobs can read",
    ),
]


def _train(tmp_path, overrides):
    from ltrain.train import train

    return train(compose_config(*SHRINK, *overrides), tmp_path / "run")


def _nothing_written(run_dir: Path) -> None:
    assert not (run_dir / "results.json").exists()
    assert not list(run_dir.rglob("*.ckpt")), "a checkpoint was written for a run that failed"


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_training_input_gets_its_message(case, tmp_path):
    from ltrain.errors import LtrainError

    _, _, overrides, message = case
    with pytest.raises(LtrainError) as err:
        _train(tmp_path, overrides)
    assert message in str(err.value)
    _nothing_written(tmp_path / "run")


def _good_run(tmp_path) -> Path:
    _train(tmp_path, ["model.hidden=[8]"])
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_corrupt_checkpoint_is_refused_before_training(tmp_path):
    from ltrain.errors import LtrainError

    ckpt = _good_run(tmp_path)
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # inside a tensor: torch.load alone does not notice
    ckpt.write_bytes(bytes(data))
    bad = ckpt
    with pytest.raises(LtrainError, match="sha256 does not match"):
        _train(tmp_path / "again", ["model.hidden=[8]", f"resume={bad}"])
    _nothing_written(tmp_path / "again" / "run")


def test_truncated_checkpoint_is_refused_before_training(tmp_path):
    from ltrain.errors import LtrainError

    ckpt = _good_run(tmp_path)
    bad = tmp_path / "truncated.ckpt"  # no sidecar: caught by torch.load itself
    bad.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(LtrainError, match="corrupt or truncated"):
        _train(tmp_path / "again", ["model.hidden=[8]", f"resume={bad}"])


def test_checkpoint_of_another_architecture_is_refused_naming_the_keys(tmp_path):
    from ltrain.errors import LtrainError

    ckpt = _good_run(tmp_path)
    with pytest.raises(LtrainError, match=r"another architecture.*shape mismatch"):
        _train(tmp_path / "again", ["model.hidden=[16]", f"resume={ckpt}"])


def test_wrong_type_in_the_config_exits_nonzero_with_a_hint(tmp_path):
    import subprocess

    out = subprocess.run(
        [str(Path(sys.executable).parent / "ltrain"), "data.batch_size=lots", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 2 and "bad config value" in out.stderr and "Traceback" not in out.stderr


def test_mc_dropout_with_no_samples_is_refused():
    import torch

    from ltrain.errors import LtrainError
    from ltrain.inference import mc_dropout
    from ltrain.models import build_mlp

    model = build_mlp(4, 3, hidden=[8], dropout=0.5)
    with pytest.raises(LtrainError, match=r"mc.samples must be at least 1, got 0"):
        mc_dropout(model, torch.randn(2, 4), samples=0)


EXTRA_ROWS = [  # cases tested elsewhere: (what, where, the message)
    (
        "corrupted zoo weights (a flipped byte)",
        "tests/zoo/test_catalog.py::test_flipped_byte_is_caught_by_verify_and_by_loading",
        "ltrain-zoo verify: checksum mismatch; loading raises an LtrainError that says to re-push or remove the entry",
    ),
    (
        "MC dropout with samples <= 0",
        "test_mc_dropout_with_no_samples_is_refused",
        "mc.samples must be at least 1, got 0",
    ),
    (
        "MC dropout on a model with no dropout",
        "tests/inference/test_mc_dropout.py::test_model_without_dropout_is_refused_with_a_clear_error",
        "… has no dropout … (model.dropout=0.2 … model.drop_rate=0.2)",
    ),
    (
        "a frozen-feature cache over a random augmentation",
        "tests/cache/test_cache.py::test_random_augmentation_with_cache_fails_fast_naming_the_transform",
        "… train transform ImageTransform(… augment='flip_crop') is random …",
    ),
    (
        "corrupt checkpoint (bytes flipped inside a tensor)",
        "test_corrupt_checkpoint_is_refused_before_training",
        "checkpoint … is corrupt or truncated (its sha256 does not match last.ckpt.sha256)",
    ),
    (
        "truncated checkpoint",
        "test_truncated_checkpoint_is_refused_before_training",
        "checkpoint … is corrupt or truncated",
    ),
    (
        "checkpoint of another architecture",
        "test_checkpoint_of_another_architecture_is_refused_naming_the_keys",
        "checkpoint … is of another architecture than this config's model: shape mismatch [...]",
    ),
    (
        "a config value of the wrong type (data.batch_size=lots)",
        "test_wrong_type_in_the_config_exits_nonzero_with_a_hint",
        "bad config value: … Check the value with: ltrain --cfg job",
    ),
    (
        "unknown config key (model.hiden=…)",
        "tests/test_cli.py::test_unknown_config_key_is_refused",
        "Could not override 'model.hiden'. To append to your config use +model.hiden=… Key 'hiden' is not in struct",
    ),
    (
        "ltrain-export quantize=int4 / sparsify=-1",
        "tests/export/test_low_precision.py::test_zeroing_weights_leaves_the_caller_model_untouched_and_bad_options_are_refused",
        "quantize='int4' is not one of [None, 'int8'] / sparsify=-1 must be >= 0 (0 keeps every weight)",
    ),
    (
        "ltrain-report on a directory without runs",
        "tests/test_report.py::test_report_on_an_empty_directory_says_where_to_point_it",
        "no results.json under DIR: point dir= at a run or multirun directory",
    ),
]


def render_doc() -> str:
    from ltrain.errors import LtrainError

    lines = [
        "# Bad inputs and what ltrain says",
        "",
        "Every row is tested (`tests/test_bad_inputs.py` and the test named); the process exits non-zero",
        "(the CLI prints `ltrain: error: <message>` and exits 2) and leaves no results or checkpoint behind.",
        "Generated by `python tests/test_bad_inputs.py > docs/bad-inputs.md`.",
        "",
        "| bad input | command | message (first line) |",
        "|---|---|---|",
    ]
    import os
    import tempfile

    home = tempfile.mkdtemp(prefix="ltrain-zoo-")  # an empty zoo, not the developer's own catalogue
    os.environ["LTRAIN_ZOO_HOME"] = home
    os.environ.pop("LTRAIN_ZOO_CATALOG", None)
    for _, what, overrides, _ in TRAIN_CASES:
        try:
            _train(Path(tempfile.mkdtemp()), overrides)
            msg = "(no error!)"
        except LtrainError as e:
            msg = str(e).splitlines()[0].replace(home, "$LTRAIN_ZOO_HOME")
        lines.append(f"| {what} | `ltrain {' '.join(overrides)}` | {msg.replace('|', '/')} |")
    for what, where, msg in EXTRA_ROWS:
        lines.append(f"| {what} | see `{where}` | {msg} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_doc(), end="")
