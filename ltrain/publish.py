"""Publishing runs to the zoo: the checks before training, and the push of a finished run (the ``app`` layer).

Here, not in the catalogue, because a push of a run rebuilds its data and network from the run's config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from ltrain.data.factory import build_datamodule
from ltrain.errors import LtrainError
from ltrain.models.factory import build_model
from ltrain.models.pretrained import load_checked, read_weights_file
from ltrain.store.catalog import bool_option, check_name
from ltrain.zoo import Zoo, ZooEntry


def recipe_entry_name(cfg: Any, default: str) -> str:
    """The zoo entry a recipe pushes: ``zoo.push`` if the user named one (a taken name then fails in
    ``check_push``), else ``default`` — or ``default_2``, ``default_3``, … when that is taken, so rerunning a
    recipe (``make demo`` twice) adds an entry and never replaces or refuses the earlier run's.
    ``zoo.overwrite=true`` keeps ``default`` and replaces it."""
    zoo_cfg = cfg.get("zoo") or {}
    if zoo_cfg.get("push"):
        return str(zoo_cfg.push)
    if bool_option(zoo_cfg.get("overwrite", False), "zoo.overwrite"):
        return default
    zoo, name, n = Zoo(), default, 1
    while zoo.exists(name):
        n += 1
        name = f"{default}_{n}"
    return name


def check_push(cfg: Any, name: str | None = None, by: str | None = None) -> None:
    """Fail before any training if a push at the end of the run could not succeed.

    ``name`` is the entry the run will push (default ``zoo.push``); ``by`` says who chose it (a recipe) for the
    message. Checks: the name is valid, ``zoo.overwrite`` is a real boolean, the store and catalogue can be
    written, and the name is free unless ``zoo.overwrite=true``.
    """
    zoo_cfg = cfg.get("zoo") or {}
    overwrite = bool_option(zoo_cfg.get("overwrite", False), "zoo.overwrite")
    name = name or zoo_cfg.get("push")
    if not name:
        return
    check_name(str(name))
    zoo = Zoo()
    zoo.check_writable()
    if zoo.exists(str(name)) and not overwrite:
        if by:
            raise LtrainError(
                f"{by} pushes its model to the zoo as {name}, which exists (an earlier run?): remove it "
                f"(ltrain-zoo rm {name}), choose another name with zoo.push=NAME, or replace it with zoo.overwrite=true"
            )
        raise LtrainError(
            f"zoo.push={name}: that entry exists. Choose another name or add zoo.overwrite=true "
            f"(multirun: 'zoo.push=NAME_s${{seed}}')"
        )


def push_trained(cfg: Any, model: nn.Module, datamodule: Any, results: Mapping[str, Any]) -> ZooEntry:
    """Push the network of a finished ``train`` run as ``cfg.zoo.push`` (the caller runs this on rank 0 only)."""
    zoo_cfg = cfg.zoo
    metrics = {k: results[k] for k in ("test_acc", "test_loss", "best_val_acc") if results.get(k) is not None}
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        config = OmegaConf.to_container(cfg, resolve=False)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return Zoo().push(
        model,
        str(zoo_cfg.push),
        model_cfg=model_cfg,
        num_classes=datamodule.num_classes,
        input_shape=datamodule.input_shape,
        dataset=datamodule.describe(),
        preprocessing=preprocessing_of(datamodule),
        metrics=metrics,
        seeds=[int(cfg.seed)],
        config=config,
        parent=zoo_cfg.get("parent"),
        pretrained=model_cfg.get("pretrained"),
        description=zoo_cfg.get("description") or "",
        overwrite=bool_option(zoo_cfg.get("overwrite", False), "zoo.overwrite"),
    )


def push_run(
    run_dir: str | Path,
    name: str,
    *,
    more_runs: Sequence[str | Path] = (),
    description: str = "",
    parent: str | None = None,
    overwrite: bool = False,
    zoo: Zoo | None = None,
) -> ZooEntry:
    """Push a finished ``ltrain`` run (its ``config.yaml``, ``results.json`` and best checkpoint) as entry ``name``.

    ``more_runs`` are the same config's runs with other seeds (e.g. a multirun's other jobs): their test
    metrics join the entry's mean ± std; the weights are ``run_dir``'s.
    """
    runs = [Path(run_dir), *map(Path, more_runs)]
    configs, results = [], []
    for run in runs:
        if not (run / "config.yaml").is_file() or not (run / "results.json").is_file():
            raise LtrainError(f"{run} is not a finished ltrain run (config.yaml and results.json expected there)")
        configs.append(OmegaConf.load(run / "config.yaml"))
        results.append(json.loads((run / "results.json").read_text()))
    cfg = configs[0]
    for run, other in zip(runs[1:], configs[1:], strict=True):
        if OmegaConf.to_container(other.model) != OmegaConf.to_container(cfg.model) or other.data != cfg.data:
            raise LtrainError(f"{run} trained another model or data than {runs[0]}: only seeds may differ")
    ckpt = Path(results[0].get("best_checkpoint") or "")
    if not ckpt.is_file():
        ckpt = next((p for p in (runs[0] / "checkpoints" / n for n in ("best.ckpt", "last.ckpt")) if p.is_file()), None)
        if ckpt is None:
            raise LtrainError(
                f"no checkpoint in {runs[0] / 'checkpoints'}: was the run stopped before its first epoch?"
            )
    if all(results[0].get(k) is not None for k in ("input_shape", "preprocessing", "data")):
        dataset, input_shape, prep = results[0]["data"], results[0]["input_shape"], results[0]["preprocessing"]
    else:  # a run from before results.json recorded these: load its data again
        dm = build_datamodule(cfg)
        dataset, input_shape, prep = dm.describe(), dm.input_shape, preprocessing_of(dm)
    num_classes = len(dataset["class_names"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_model({**model_cfg, "pretrained": None}, num_classes, tuple(input_shape))
    load_checked(model, read_weights_file(ckpt), origin=str(ckpt))
    metrics = {
        k: [r[k] for r in results]
        for k in ("test_acc", "test_loss", "best_val_acc")
        if all(r.get(k) is not None for r in results)
    }
    return (zoo or Zoo()).push(
        model,
        name,
        model_cfg=model_cfg,
        num_classes=num_classes,
        input_shape=input_shape,
        dataset=dataset,
        preprocessing=prep,
        metrics=metrics,
        seeds=[int(c.seed) for c in configs],
        config=OmegaConf.to_container(cfg, resolve=False),
        parent=parent,
        pretrained=model_cfg.get("pretrained"),
        description=description,
        overwrite=overwrite,
    )


def preprocessing_of(datamodule: Any) -> dict[str, Any]:
    """Mean/std (and resize) of ltrain's evaluation transform, in timm's terms."""
    transform = getattr(datamodule, "splits", {}).get("val")
    transform = getattr(transform, "transform", None)
    if transform is None or not hasattr(transform, "mean"):
        return {}
    return {
        "mean": list(transform.mean),
        "std": list(transform.std),
        "interpolation": getattr(transform, "interpolation", "bilinear"),  # a streamed folder's: timm's own
        "crop_pct": getattr(transform, "crop_pct", 1.0),
    }
