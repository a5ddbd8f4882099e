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
    (
        "test_cap_too_large",
        "a per-class test cap larger than the test split",
        ["data.test_per_class=1000"],
        "data.test_per_class=1000, but class 0 has only",
    ),
    ("bad_augment", "an unknown augmentation", ["data.augment=mixup"], "data.augment='mixup' is not one of"),
    # mixup=default (timm's Mixup/CutMix on training batches): what cannot be exact is refused before training
    (
        "mixup_odd_batch",
        "Mixup with an odd batch size",
        ["mixup=default", "data.batch_size=63"],
        "needs an even data.batch_size, got data.batch_size=63",
    ),
    (
        "mixup_with_cache",
        "Mixup with a frozen-feature cache",
        ["mixup=default", "freeze=head_only", "cache=memory"],
        "mixup with a feature cache cannot be exact",
    ),
    (
        "mixup_batch_over_train",
        "Mixup with a batch larger than the training split",
        ["mixup=default", "data.train_per_class=2"],
        "every training batch would be dropped",
    ),
    ("mixup_with_mse", "Mixup with the MSE loss", ["mixup=default", "loss=mse"], "which loss='mse' does not take"),
    (
        "mixup_num_classes",
        "Mixup for another number of classes than the data's",
        ["mixup=default", "mixup.num_classes=5"],
        "mixup.num_classes=5 but the data has 10 classes",
    ),
    (
        "mixup_nothing",
        "Mixup with both alphas 0",
        ["mixup=default", "mixup.mixup_alpha=0", "mixup.cutmix_alpha=0"],
        "mix nothing: set one of them > 0",
    ),
    ("mixup_mode", "an unknown Mixup mode", ["mixup=default", "mixup.mode=pairs"], "mixup.mode='pairs' is not one of"),
    (
        "mixup_prob",
        "a Mixup probability of 1.5",
        ["mixup=default", "mixup.prob=1.5"],
        "mixup.prob=1.5 is not valid: expected a probability in [0, 1]",
    ),
    (
        "cutmix_minmax_reversed",
        "a CutMix box range with min above max",
        ["mixup=default", "mixup.cutmix_minmax=[0.8,0.2]"],
        "mixup.cutmix_minmax=[0.8, 0.2] is not valid",
    ),
    ("zero_batch", "a batch size of 0", ["data.batch_size=0"], "data.batch_size=0 is not valid: expected a whole"),
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
        "image_folder_bad_files_choice",
        "an unknown bad-file policy for an image folder",
        ["data=image_folder", "data.root=/nonexistent", "data.bad_files=ignore"],
        "data.bad_files='ignore' is not one of ['error', 'skip']",
    ),
    (
        "image_folder_erasing_prob",
        "a random-erasing probability of 2",
        ["data=image_folder", "data.root=/nonexistent", "data.re_prob=2"],
        "data.re_prob=2 is not valid: expected a probability in [0, 1]",
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
    # typed, validated config (ltrain.validate): the key, the value and what is valid, before any work
    ("seed_not_int", "a seed that is not a number", ["seed=abc"], "seed='abc' is not valid: expected an integer"),
    ("no_epochs", "zero epochs", ["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid"),
    ("negative_epochs", "a negative epoch count", ["trainer.max_epochs=-5"], "trainer.max_epochs=-5 is not valid"),
    ("lr_word", "a learning rate in words", ["optimizer.lr=fast"], "optimizer.lr='fast' is not valid"),
    ("lr_negative", "a negative learning rate", ["optimizer.lr=-0.01"], "optimizer.lr=-0.01 is not valid"),
    ("lr_zero", "a learning rate of 0", ["optimizer.lr=0"], "optimizer.lr=0 is not valid: expected a learning"),
    ("batch_fraction", "a fractional batch size", ["data.batch_size=1.5"], "data.batch_size=1.5 is not valid"),
    ("batch_negative", "a negative batch size", ["data.batch_size=-8"], "data.batch_size=-8 is not valid"),
    ("eval_batch_zero", "an evaluation batch of 0", ["data.eval_batch_size=0"], "data.eval_batch_size=0 is not"),
    ("image_size_zero", "an image size of 0", ["data.image_size=0"], "data.image_size=0 is not valid"),
    ("image_size_word", "an image size in words", ["data.image_size=big"], "data.image_size='big' is not valid"),
    ("channels_zero", "zero channels", ["data.channels=0"], "data.channels=0 is not valid"),
    ("workers_negative", "a negative worker count", ["data.num_workers=-1"], "data.num_workers=-1 is not valid"),
    ("cap_zero", "a per-class cap of 0", ["data.train_per_class=0"], "data.train_per_class=0 is not valid"),
    ("test_cap_zero", "a per-class test cap of 0", ["data.test_per_class=0"], "data.test_per_class=0 is not valid"),
    ("val_fraction_one", "a validation fraction of 1.5", ["data.val_fraction=1.5"], "data.val_fraction=1.5 is not"),
    ("test_fraction_neg", "a negative test fraction", ["data.test_fraction=-0.1"], "data.test_fraction=-0.1 is not"),
    ("hidden_scalar", "hidden widths as one number", ["model.hidden=100"], "model.hidden=100 is not valid"),
    ("hidden_zero", "a hidden layer of width 0", ["model.hidden=[0,100]"], "model.hidden=[0, 100] is not valid"),
    ("hidden_fraction", "a fractional width", ["model.hidden=[10.5]"], "model.hidden=[10.5] is not valid"),
    ("dropout_layers_zero", "dropout on 0 top layers", ["model.dropout_layers=0"], "model.dropout_layers=0 is not"),
    ("drop_rate_high", "a timm drop rate of 2", ["model=timm", "model.drop_rate=2"], "model.drop_rate=2 is not"),
    ("l1_negative", "a negative l1 penalty", ["l1=-1"], "l1=-1 is not valid: expected a penalty >= 0"),
    ("l2_word", "an l2 penalty in words", ["l2=strong"], "l2='strong' is not valid"),
    ("clip_zero", "gradient clipping at 0", ["trainer.gradient_clip_val=0"], "trainer.gradient_clip_val=0 is not"),
    ("decay_negative", "a negative weight decay", ["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is"),
    (
        "momentum_one",
        "momentum of 1.5",
        ["optimizer=momentum", "optimizer.momentum=1.5"],
        "optimizer.momentum=1.5 is not valid: expected a number in [0, 1)",
    ),
    ("test_word", "test=maybe", ["test=maybe"], "test='maybe' is not valid: expected true or false"),
    ("plots_word", "plots=yes", ["plots=yes"], "plots='yes' is not valid: expected true or false"),
    ("overwrite_no", "zoo.overwrite=no (a string)", ["zoo.overwrite=no"], "zoo.overwrite='no' is not valid"),
    ("one_class", "a one-class dataset", ["data.classes=[3]"], "keeps one class: a classifier needs at least 2"),
    ("classes_scalar", "classes as one number", ["data.classes=5"], "data.classes=5 is not valid: expected a list"),
    (
        "resnet_2px",
        "a resnet on 2-pixel images",
        ["model=timm", "model.name=resnet10t", "data.image_size=2"],
        "the inputs are 2 pixels, smaller than resnet10t's total stride of 32",
    ),
    (
        "resnet_28px",
        "a resnet on the 28-pixel digits as they are",
        ["model=timm", "model.name=resnet10t"],
        "the inputs are 28 pixels, smaller than resnet10t's total stride of 32",
    ),
    (
        "vit_8px",
        "a ViT on 8-pixel images",
        ["model=timm", "model.name=vit_tiny_patch16_224", "data.image_size=8", "data.channels=3"],
        "smaller than vit_tiny_patch16_224's total stride of 16",
    ),
]


# ltrain-predict: (id, what, overrides, message), checked on the composed predict config before any loading
PREDICT_CASES = [
    ("mc_negative", "MC dropout with -5 samples", ["mc.samples=-5"], "mc.samples=-5 is not valid"),
    ("mc_word", "MC samples in words", ["mc.samples=many"], "mc.samples='many' is not valid"),
    ("limit_zero", "predict 0 inputs", ["limit=0"], "limit=0 is not valid: expected a whole number of inputs"),
    ("predict_batch_zero", "a prediction batch of 0", ["batch_size=0"], "batch_size=0 is not valid"),
    ("bins_zero", "a reliability diagram with 0 bins", ["mc.n_bins=0"], "mc.n_bins=0 is not valid"),
    ("chunk_zero", "MC chunks of 0 samples", ["mc.chunk_size=0"], "mc.chunk_size=0 is not valid"),
    ("memory_negative", "a negative memory limit", ["mc.max_memory_mb=-1"], "mc.max_memory_mb=-1 is not valid"),
]

# typos in group, option and key names: the CLI says "did you mean" before Hydra starts (exit 2, no traceback)
CLI_CASES = [
    (
        "group_typo",
        "a misspelt config group",
        ["ltrain", "optimzer=adam"],
        "optimzer: no such config key. Did you mean optimizer?",
    ),
    ("option_typo", "a misspelt group option", ["ltrain", "optimizer=adamm"], "Did you mean optimizer=adam?"),
    (
        "key_typo",
        "a misspelt key",
        ["ltrain", "model.hiden=[8]"],
        "model.hiden: no such config key. Did you mean model.hidden?",
    ),
    ("top_key_typo", "a misspelt top-level key", ["ltrain", "sed=1"], "sed: no such config key. Did you mean seed?"),
    (
        "nested_key_typo",
        "a misspelt trainer key",
        ["ltrain", "trainer.max_epoch=3"],
        "Did you mean trainer.max_epochs?",
    ),
    (
        "sweep_option_typo",
        "a misspelt option in a sweep",
        ["ltrain", "-m", "optimizer=adam,sgdd"],
        "Did you mean optimizer=sgd?",
    ),
    (
        "predict_key_typo",
        "a misspelt ltrain-predict key",
        ["ltrain-predict", "mc.sample=3"],
        "Did you mean mc.samples?",
    ),
    (
        "export_key_typo",
        "a misspelt ltrain-export key",
        ["ltrain-export", "input_sise=[32,32]"],
        "Did you mean input_size?",
    ),
    (
        "export_group_typo",
        "a misspelt ltrain-export model group",
        ["ltrain-export", "model=timmm"],
        "Did you mean model=timm?",
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


def _predict_config(overrides):
    return compose_config("source=RUN", *overrides, config_name="predict")


@pytest.mark.parametrize("case", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES])
def test_bad_predict_input_gets_its_message(case):
    from ltrain.errors import LtrainError
    from ltrain.validate import validate_predict_config

    _, _, overrides, message = case
    with pytest.raises(LtrainError) as err:
        validate_predict_config(_predict_config(overrides))
    assert message in str(err.value)


def _cli(argv: list[str]):
    import subprocess

    return subprocess.run(
        [str(Path(sys.executable).parent / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_typo_in_a_config_name_gets_did_you_mean(case, tmp_path):
    _, _, argv, message = case
    out = _cli([*argv, f"hydra.run.dir={tmp_path / 'run'}"])
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()


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
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "data.batch_size='lots' is not valid: expected a whole number >= 1" in out.stderr


def _unfinished(tmp_path) -> Path:
    run = tmp_path / "run"
    _train(tmp_path, ["model.hidden=[8]"])
    (run / "results.json").unlink()  # as a kill during testing leaves it
    return run


def test_a_damaged_run_config_is_named_on_resume(tmp_path):
    from ltrain.errors import LtrainError

    run = _unfinished(tmp_path)
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(LtrainError, match=rf"cannot read {run / 'config.yaml'}"):
        _train(tmp_path, ["model.hidden=[8]", "resume=auto"])


def test_a_damaged_metric_history_is_named_on_resume(tmp_path):
    from ltrain.errors import LtrainError

    run = _unfinished(tmp_path)
    (run / "logs" / "metrics.csv").write_bytes(b"epoch,step\n\xff\xfe\x00garbage\n")
    with pytest.raises(LtrainError, match=rf"cannot read the metric history {run / 'logs' / 'metrics.csv'}"):
        _train(tmp_path, ["model.hidden=[8]", "resume=auto"])


def _idx_folder(tmp_path: Path, damage: str) -> Path:
    """The four Fashion-MNIST IDX .gz files (tiny, real format), the train images damaged as ``damage`` says."""
    import gzip

    root = tmp_path / "fashion"
    root.mkdir()
    images = bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(range(256)) * 12
    labels = bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes([0, 1, 2, 3])
    for prefix in ("train", "t10k"):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images[: 16 + 4 * 784]))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    path = root / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    if damage == "truncated":  # a download cut short: the gzip stream ends early
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flipped bytes inside the compressed stream: gzip's CRC or inflate fails
        data[20:40] = bytes(b ^ 0xFF for b in data[20:40])
        path.write_bytes(bytes(data))
    return root


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_idx_gz_is_named(tmp_path, damage):
    from ltrain.errors import LtrainError

    root = _idx_folder(tmp_path, damage)
    with pytest.raises(LtrainError, match=r"train-images-idx3-ubyte\.gz is (truncated|corrupt)") as err:
        _train(tmp_path, ["data=fashion_mnist", f"data.root={root}"])
    assert str(root / "train-images-idx3-ubyte.gz") in str(err.value) and "re-download" in str(err.value)
    _nothing_written(tmp_path / "run")


@pytest.mark.parametrize("damage", ["not_an_image", "truncated_jpeg"])
def test_a_damaged_image_in_an_image_folder_is_named(tmp_path, damage):
    import io

    import numpy as np
    from PIL import Image

    from ltrain.errors import LtrainError

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    bad = root / "dog" / "broken.jpg"
    if damage == "not_an_image":
        bad.write_bytes(b"<html>404 Not Found</html>")
    else:  # a JPEG cut short (a copy interrupted): PIL opens it lazily, then fails to decode
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(LtrainError, match="cannot read the image") as err:
        _train(tmp_path, ["data=image_folder", f"data.root={root}", "data.image_size=16", "data.num_workers=0"])
    assert str(bad) in str(err.value) and "remove or replace it" in str(err.value)
    _nothing_written(tmp_path / "run")


def _checkpoint_run(tmp_path: Path) -> Path:
    """A finished tiny run (its best.ckpt has a sha256 sidecar)."""
    _train(tmp_path, ["model.hidden=[8]"])
    return tmp_path / "run"


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_ltrain_export_names_a_damaged_checkpoint(tmp_path, damage):
    from ltrain.errors import LtrainError
    from ltrain.export.pipeline import export

    run = _checkpoint_run(tmp_path)
    ckpt = run / "checkpoints" / "best.ckpt"
    data = bytearray(ckpt.read_bytes())
    if damage == "truncated":
        ckpt.write_bytes(bytes(data[:1000]))
    else:  # inside a tensor: torch.load alone does not notice, only the sidecar does
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
        ckpt.write_bytes(bytes(data))
    cfg = compose_config(f"source={run}", "input_size=null", "compare_unfolded=false", config_name="export")
    with pytest.raises(LtrainError, match=r"corrupt or truncated|truncated or corrupt") as err:
        export(cfg, tmp_path / "out")
    assert str(ckpt) in str(err.value)
    assert not (tmp_path / "out" / "model.onnx").exists()


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
        "FrozenFeatureCache beside a LightningModule that mixes its inputs (Python API)",
        "tests/modules/test_mixup.py::test_a_feature_cache_under_a_module_that_mixes_its_inputs_is_refused_before_the_first_step",
        "ClassifierModule mixes its training inputs (Mixup/CutMix): features cached from unmixed inputs cannot be "
        "mixed exactly. Drop one: mixup=null or the cache option",
    ),
    (
        "BatchMixup given an odd batch (Python API; ltrain drops the last odd batch itself)",
        "tests/modules/test_mixup.py::test_refusals_name_the_key",
        "Mixup/CutMix mixes a batch with its reverse and needs an even batch, got 7: use an even data.batch_size "
        "and drop the last incomplete batch (DataLoader(drop_last=True); ltrain does both)",
    ),
    (
        "CutMix on inputs that are not (C, H, W) images",
        "tests/modules/test_mixup.py::test_refusals_name_the_key",
        "CutMix cuts boxes out of images, but the inputs have shape (784,), not (C, H, W): set "
        "mixup.cutmix_alpha=0 (mixup only) or feed images",
    ),
    (
        "resume=auto into its own FINISHED run (hydra.run.dir=RUN)",
        "tests/test_resume.py::test_resume_auto_never_reopens_a_finished_run",
        "RUN holds a finished run (results.json): its files are not rewritten. Start a new run in another "
        "directory … or continue training from its weights in a new directory: resume=RUN/checkpoints/last.ckpt",
    ),
    (
        "resume=auto when the newest run with this config has finished",
        "tests/test_resume.py::test_resume_auto_never_reopens_a_finished_run",
        "(warning) resume=auto: the newest run with this config, RUN, has finished (results.json); a finished run "
        "is not reopened, so a new run starts in NEW",
    ),
    (
        "resume=auto into a run of another architecture (model.hidden)",
        "tests/test_resume.py::test_resuming_a_run_with_another_model_data_or_seed_is_refused_before_anything_is_written",
        "RUN holds another run than this config describes; nothing in it was changed. model.hidden: [100, …] -> …",
    ),
    (
        "resume=auto into a run on another dataset (data.classes)",
        "tests/test_resume.py::test_resuming_a_run_with_another_model_data_or_seed_is_refused_before_anything_is_written",
        "RUN holds another run than this config describes; nothing in it was changed. data.classes: None -> [0, 1, …]",
    ),
    (
        "resume=auto into a run with another seed",
        "tests/test_resume.py::test_resuming_a_run_with_another_model_data_or_seed_is_refused_before_anything_is_written",
        "RUN holds another run than this config describes; nothing in it was changed. seed: 0 -> 1",
    ),
    (
        "resume=auto into a run with another optimizer.lr, l2 or freeze schedule",
        "tests/test_resume.py::test_resuming_a_run_with_another_model_data_or_seed_is_refused_before_anything_is_written",
        "RUN holds another run than this config describes; nothing in it was changed. optimizer.lr: 0.001 -> 0.1",
    ),
    (
        "the CLI refusing a mismatched resume leaves the run's .hydra/config.yaml untouched",
        "tests/test_resume.py::test_cli_refusal_leaves_the_runs_hydra_record_untouched",
        "ltrain: error: RUN holds another run … (exit 2, no traceback, every file of the run byte-identical)",
    ),
    (
        "a new run (no resume) into a directory that holds one",
        "tests/test_resume.py::test_a_new_run_into_a_directory_that_holds_one_is_refused",
        "RUN already holds a run (config.yaml): resume=auto continues it; for a new run, drop hydra.run.dir …",
    ),
    (
        "Ctrl-C mid-run (steps 8 and 14), then resume=auto",
        "tests/test_resume.py::test_ctrl_c_mid_run_then_resume_auto_keeps_every_epoch_exactly_once",
        "(no error) logs/metrics.csv holds every epoch 0..N exactly once; learning_curves.png shows them all",
    ),
    (
        "Ctrl-C before the first checkpoint, then resume=auto",
        "tests/test_resume.py::test_ctrl_c_before_the_first_checkpoint_keeps_the_old_log_rows_aside",
        "(no error) the run starts over; the interrupted attempt's rows move to logs/dropped-<time>.csv, not deleted",
    ),
    (
        "two ltrain processes started in the same second",
        "tests/test_resume.py::test_two_ltrain_processes_started_together_write_two_run_directories",
        "(no error) two run directories: runs/DATE/H-M-S-<pid>-<random>",
    ),
    (
        "a damaged config.yaml in the run being resumed",
        "test_a_damaged_run_config_is_named_on_resume",
        "cannot read RUN/config.yaml (…): the run's saved config is damaged",
    ),
    (
        "a damaged logs/metrics.csv in the run being resumed",
        "test_a_damaged_metric_history_is_named_on_resume",
        "cannot read the metric history RUN/logs/metrics.csv: …. Move it aside to start a new history",
    ),
    (
        "zoo.push=NAME of an existing entry",
        "tests/test_publish.py::test_a_run_pushes_its_model_and_a_fine_tuned_run_records_its_parent",
        "zoo.push=NAME: that entry exists. Choose another name or add zoo.overwrite=true (before any training)",
    ),
    (
        "zoo.overwrite=no / yes / 0 with zoo.push of an existing entry",
        "tests/test_publish.py::test_zoo_overwrite_must_be_a_real_boolean",
        "zoo.overwrite='no' is not a boolean: write zoo.overwrite=true or zoo.overwrite=false (the entry is kept)",
    ),
    (
        "LTRAIN_ZOO_HOME pointing at a file, with zoo.push",
        "tests/test_publish.py::test_a_zoo_home_that_is_a_file_fails_before_training",
        "the weight store $LTRAIN_ZOO_HOME HOME cannot be used: HOME is a file, not a folder. (before training)",
    ),
    (
        "the zoo push fails after training (store gone, disk full)",
        "tests/test_publish.py::test_a_push_that_fails_at_the_end_leaves_a_finished_run_that_ltrain_zoo_push_accepts",
        "the run finished (RUN/results.json), but pushing it to the zoo as NAME failed: … Once fixed, push it "
        "with: ltrain-zoo push NAME --run RUN",
    ),
    (
        "rerunning a recipe (make demo twice) whose model is in the zoo; or zoo.push=NAME of a taken entry",
        "tests/test_publish.py::test_rerunning_a_transfer_recipe_adds_an_entry_and_never_replaces_model_a",
        "(no error) the rerun pushes mnist_transfer_a_s0_2 and keeps mnist_transfer_a_s0; a name given with "
        "zoo.push that exists: recipe=mnist_transfer pushes its model to the zoo as NAME, which exists (an earlier "
        "run?): remove it (ltrain-zoo rm …), choose another name with zoo.push=NAME, or replace it with "
        "zoo.overwrite=true",
    ),
    (
        "ltrain-report over runs with different configs (learning rates, epochs)",
        "tests/test_report.py::test_report_pools_only_over_seeds_and_names_what_differs",
        "(no error) one row per config, e.g. `run [optimizer.lr=0.01, trainer.max_epochs=10]`; "
        "'rows differ in optimizer.lr, trainer.max_epochs'; one run prints no ±",
    ),
    (
        "ltrain-report over a truncated results.json",
        "tests/test_report.py::test_report_names_a_damaged_results_file",
        "cannot read DIR/a/results.json: …. The file is damaged (a run killed while writing it?) …",
    ),
    (
        "ltrain-export whose ONNX Runtime check fails",
        "tests/export/test_export_cli.py::test_a_failed_check_leaves_no_export_behind",
        "ONNX Runtime output of … differs from PyTorch …; nothing is left in the output folder",
    ),
    (
        "SIGKILL during ltrain-export",
        "tests/export/test_export_cli.py::test_sigkill_during_ltrain_export_leaves_the_previous_export_or_the_whole_new_one",
        "(killed) model.onnx appears only with export.json; the next export clears the dead one's staging folder",
    ),
    (
        "corrupted zoo weights (a flipped byte)",
        "tests/store/test_catalog.py::test_flipped_byte_is_caught_by_verify_and_by_loading",
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
        "tests/callbacks/test_cache.py::test_random_augmentation_with_cache_fails_fast_naming_the_transform",
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
        "data.batch_size='lots' is not valid: expected a whole number >= 1, e.g. data.batch_size=64",
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
    (
        "a truncated or corrupt Fashion-MNIST .gz (data=fashion_mnist data.root=ROOT)",
        "test_a_damaged_idx_gz_is_named",
        "ROOT/train-images-idx3-ubyte.gz is truncated or corrupt (EOFError: …): re-download it (on Debian/Ubuntu: …)",
    ),
    (
        "a damaged image (not an image, or cut short) in an image folder",
        "test_a_damaged_image_in_an_image_folder_is_named",
        "cannot read the image ROOT/dog/broken.jpg (…): the file is damaged or not an image; remove or replace it, then "
        "rerun (or set data.bad_files=skip to leave such files out)",
    ),
    (
        "unreadable images with data.bad_files=skip",
        "tests/data/test_folder_bad_files.py::test_bad_files_skip_leaves_them_out_counted_and_named",
        "(warning) data.bad_files=skip: left out 2 unreadable image file(s) in the train files of image_folder:ROOT: "
        "ROOT/cat/page.png, ROOT/dog/cut.jpg",
    ),
    (
        "a text file (notes.txt) inside a class folder",
        "tests/data/test_folder_bad_files.py::test_a_text_file_in_a_class_folder_is_not_an_image_and_is_ignored",
        "(no error) not an image by extension: left out, logged: ROOT: ignored 1 file(s) that are not images by "
        "extension: cat/notes.txt",
    ),
    (
        "CMYK, palette, RGBA, LA, grey or 16-bit grey images in a folder",
        "tests/data/test_folder_bad_files.py::test_odd_colour_modes_decode_to_three_channels",
        "(no error) converted to RGB (alpha dropped as torchvision's loader does; 16-bit grey scaled to 8 bits)",
    ),
    (
        "an empty class folder",
        "tests/data/test_folder_bad_files.py::test_an_empty_class_folder_is_refused_naming_it",
        "the class folder ROOT/emu has no image files (.jpg, .jpeg, …): add images to it or remove the folder",
    ),
    (
        "an image folder with a single class",
        "tests/data/test_folder_bad_files.py::test_a_single_class_folder_is_refused",
        "ROOT has 1 class (['cat']): a classifier needs at least 2; add a folder (or label) per class",
    ),
    (
        "an image list (data=image_list) naming a missing file, a bad row or an unknown test label",
        "tests/data/test_folder_bad_files.py::test_a_csv_naming_a_missing_file_or_a_bad_row_is_refused_naming_the_line",
        "CSV line 4: the image ROOT/cat/gone.jpg does not exist; fix the path or drop the row",
    ),
    (
        "an image that fails to decode in a DataLoader worker mid-epoch",
        "tests/data/test_folder_bad_files.py::test_a_file_that_fails_to_decode_in_a_worker_reaches_the_user_as_one_named_error",
        "cannot read the image ROOT/cat/zz_damaged.jpg (OSError: …): the file is damaged or not an image; remove or "
        "replace it, then rerun (data.check_files=decode finds every such file before training, data.bad_files=skip "
        "then leaves them out) — no worker traceback",
    ),
    (
        "model.pretrained=zoo:NAME with data=image_folder, the entry recording no mean/std of its inputs",
        "tests/data/test_folder.py::test_a_zoo_entry_that_cannot_say_its_preprocessing_is_refused_before_training",
        "zoo entry 'NAME' does not record the mean/std its inputs were standardised with, so the preprocessing its "
        "weights expect is unknown. Set data.preprocess=dataset (mean/std of your train split) and data.image_size, …",
    ),
    (
        "model.pretrained=zoo:NAME (a 1-channel entry) with data=image_folder data.channels=3",
        "tests/data/test_folder.py::test_a_zoo_entry_that_cannot_say_its_preprocessing_is_refused_before_training",
        "data.channels=3, but zoo entry 'NAME' was trained on 1-channel inputs: leave data.channels unset (the "
        "entry's) or set data.preprocess=dataset",
    ),
    (
        "ltrain-export source=RUN whose checkpoint is truncated or has flipped bytes",
        "test_ltrain_export_names_a_damaged_checkpoint",
        "checkpoint RUN/checkpoints/best.ckpt is corrupt or truncated (its sha256 does not match best.ckpt.sha256); nothing is exported",
    ),
    (
        "a damaged frozen-feature cache file (cache=disk with reuse)",
        "tests/callbacks/test_cache.py::test_a_damaged_cache_file_is_named_and_recomputed_not_read",
        "(warning) FrozenFeatureCache: the cache file FILE is damaged (…); recomputing it",
    ),
    (
        "a disk feature-cache file cut short while a run reads it (another process truncated it)",
        "tests/callbacks/test_cache_mmap.py::test_a_cache_file_cut_short_under_a_running_fit_is_named_not_read_as_zeros",
        "FrozenFeatureCache: the cache file FILE was cut short while this run read it (…): something truncated or "
        "rewrote it in place. Rerun: the next run finds it damaged and recomputes it",
    ),
    (
        "cache.dtype=float8 (a storage type the feature cache does not have)",
        "tests/callbacks/test_cache_dtype.py::test_an_unknown_dtype_is_refused_listing_the_choices",
        "cache.dtype='float8' is not one of ['float32', 'float16', 'bfloat16'] (float32 is exact; the half types are not)",
    ),
    (
        "tune.apply=true with an LR sweep whose loss curve is flat",
        "tests/test_presets.py::test_lr_find_does_not_apply_a_suggestion_from_a_flat_curve",
        "(warning) lr_find: the suggestion is not applied: the loss curve is flat: it falls by 0.4% over the sweep, less than tune.min_drop=10%. The run keeps optimizer.lr=…",
    ),
]


def test_every_row_of_the_document_is_a_case_here_and_every_case_a_row():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| bad input")]
    cases = [c[1] for c in (*TRAIN_CASES, *PREDICT_CASES, *CLI_CASES)] + [r[0] for r in EXTRA_ROWS]
    assert len(rows) == len(cases) >= 80, (len(rows), len(cases))
    for what in cases:
        assert any(row.startswith(f"| {what} |") for row in rows), f"{what!r}: regenerate docs/bad-inputs.md"
    tests = Path(__file__).resolve().parent
    for _, where, _ in EXTRA_ROWS:  # a row that names a test names one that exists
        file, _, name = where.rpartition("::")
        source = (tests.parent / file if file else Path(__file__)).read_text()
        assert f"def {name}(" in source, where


def render_doc() -> str:
    from ltrain.errors import LtrainError

    lines = [
        "# Bad inputs and what ltrain says",
        "",
        "Every row is tested (`tests/test_bad_inputs.py` and the test named); the process exits non-zero",
        "(the CLI prints `ltrain: error: <message>` and exits 2) and leaves no results or checkpoint behind.",
        "Rows marked (no error), (warning) or (killed) are the data-safety cases: what happens to your files.",
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
    for _, what, overrides, _ in PREDICT_CASES:
        from ltrain.validate import validate_predict_config

        try:
            validate_predict_config(_predict_config(overrides))
            msg = "(no error!)"
        except LtrainError as e:
            msg = str(e).splitlines()[0]
        lines.append(f"| {what} | `ltrain-predict source=RUN {' '.join(overrides)}` | {msg.replace('|', '/')} |")
    for _, what, argv, _ in CLI_CASES:
        out = _cli(argv)
        msg = (out.stderr.strip().splitlines() or ["(no error!)"])[0].removeprefix("ltrain: error: ")
        lines.append(f"| {what} | `{' '.join(argv)}` | {msg.replace('|', '/')} |")
    for what, where, msg in EXTRA_ROWS:
        lines.append(f"| {what} | see `{where}` | {msg} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_doc(), end="")
