"""The zoo's catalogue and weight store: files, checksums, lineage, locks — and nothing about training.

This is the bottom of ltrain's zoo (the ``store`` layer): it reads and writes entries but never builds a
network from a config or runs a Trainer. :mod:`ltrain.zoo` adds loading an entry as a network;
:mod:`ltrain.publish` pushes a finished run.

Two places, on purpose:

- the **catalogue** — one small YAML file per entry (what the model is, what it was trained on, how well it
  did over which seeds, the config that made it, its parent, the checksums of its files). Text, meant for git:
  ``$LTRAIN_ZOO_CATALOG``, default ``$LTRAIN_ZOO_HOME/catalog`` (point it at a folder of your repository, e.g.
  ``zoo/``, to version your catalogue with your code);
- the **store** — the weights, outside git: ``$LTRAIN_ZOO_HOME`` (default ``~/.cache/ltrain/zoo``), one folder
  per entry version, ``models/NAME/VERSION/`` holding ``config.json`` + ``model.safetensors`` exactly as timm's
  ``save_for_hf`` writes them, so ``timm.create_model('local-dir:<folder>')`` loads a timm entry without ltrain.
  (MLP entries use the same layout with ltrain's ``mlp`` architecture; only ltrain can rebuild those.)

What timm lacks and this module adds: the catalogue itself (lineage, metrics over seeds, provenance), checksums
verified on every load, and writes that are atomic and locked. A push stages the folder under a temporary name,
fsyncs it, renames it into place, then writes the entry file atomically (temp + fsync + ``os.replace``) — the
entry file is the commit point, so a push killed at any moment leaves the catalogue as it was or complete.
Writers take a file lock on the catalogue and on the store (``filelock``), so concurrent pushes both land.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
import shutil
import statistics
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ltrain import __version__
from ltrain.errors import LtrainError, close_matches
from ltrain.io import atomic_write_bytes, sha256_file

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOCK_TIMEOUT_S = 120.0


# --- where things live --------------------------------------------------------------------------------------
def zoo_home() -> Path:
    """The weight store: ``$LTRAIN_ZOO_HOME``, else ``$XDG_CACHE_HOME/ltrain/zoo`` (``~/.cache/ltrain/zoo``)."""
    if os.environ.get("LTRAIN_ZOO_HOME"):
        return Path(os.environ["LTRAIN_ZOO_HOME"]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "ltrain" / "zoo").resolve()


def catalog_dir() -> Path:
    """The catalogue: ``$LTRAIN_ZOO_CATALOG``, else ``<zoo_home()>/catalog``."""
    if os.environ.get("LTRAIN_ZOO_CATALOG"):
        return Path(os.environ["LTRAIN_ZOO_CATALOG"]).expanduser().resolve()
    return zoo_home() / "catalog"


def check_name(name: str) -> str:
    """A valid entry name (letters, digits, ``.``, ``_``, ``-``; it names a file and a folder)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LtrainError(
            f"zoo entry name {name!r} is not valid: use letters, digits, '.', '_' or '-' (up to 100, "
            "starting with a letter or digit), e.g. zoo.push=digits04_mlp"
        )
    return name


# --- an entry -----------------------------------------------------------------------------------------------
def bool_option(value: Any, key: str) -> bool:
    """``value`` if it is a real boolean; ``zoo.overwrite=no`` is a non-empty string, which Python calls true."""
    if isinstance(value, bool):
        return value
    raise LtrainError(f"{key}={value!r} is not a boolean: write {key}=true or {key}=false")


@dataclass
class ZooEntry:
    """One catalogue entry, as stored in ``<catalog>/<name>.yaml``."""

    name: str
    architecture: str  # "mlp" or a timm architecture
    model: dict[str, Any]  # the model config group (name + kwargs) that rebuilds it
    num_classes: int
    input_shape: list[int]  # (C, H, W) the model was trained on
    folder: str  # the weights folder, relative to the store (models/NAME/VERSION)
    files: dict[str, dict[str, Any]]  # file name -> {sha256, size}
    created: str  # UTC, ISO 8601
    description: str = ""
    parent: str | None = None  # the zoo entry it was fine-tuned from (lineage)
    pretrained: str | None = None  # the weight source it started from (zoo:X, imagenet_lite0, a path...)
    dataset: dict[str, Any] = field(default_factory=dict)  # name, classes, class names, sizes
    preprocessing: dict[str, Any] = field(default_factory=dict)  # mean/std the inputs were standardised with
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {mean, std, n, values}
    seeds: list[int] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the run config that produced it
    versions: dict[str, str] = field(default_factory=dict)  # ltrain / torch / timm / lightning

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ZooEntry:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False, default_flow_style=None, width=110)

    def metric_text(self, name: str) -> str:
        """``0.9712 ± 0.0031 (5 seeds)`` or ``0.9712 (1 seed)``."""
        m = self.metrics.get(name)
        if not m:
            return "-"
        if m.get("std") is None:
            return f"{m['mean']:.4f} ({m['n']} seed)"
        return f"{m['mean']:.4f} ± {m['std']:.4f} ({m['n']} seeds)"


def summarize_metrics(metrics: Mapping[str, float | Sequence[float]]) -> dict[str, dict[str, Any]]:
    """``{name: value or values over seeds}`` -> ``{name: {mean, std, n, values}}`` (sample std; null for one seed)."""
    out = {}
    for name, values in metrics.items():
        values = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
        if not values:
            continue
        out[name] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
            "values": values,
        }
    return out


@dataclass
class VerifyResult:
    name: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# --- the catalogue ------------------------------------------------------------------------------------------
class Catalog:
    """A catalogue (``catalog``) of entries whose weights live in a store (``home``); defaults from the environment."""

    def __init__(self, catalog: str | Path | None = None, home: str | Path | None = None):
        self.home = Path(home).expanduser().resolve() if home else zoo_home()
        self.catalog = Path(catalog).expanduser().resolve() if catalog else catalog_dir()

    # paths
    def entry_file(self, name: str) -> Path:
        return self.catalog / f"{check_name(name)}.yaml"

    def folder(self, entry: ZooEntry | str) -> Path:
        """The weights folder of an entry: what ``timm.create_model('local-dir:<folder>')`` reads."""
        entry = self.get(entry) if isinstance(entry, str) else entry
        return self.home / entry.folder

    # reading
    def names(self) -> list[str]:
        if not self.catalog.is_dir():
            return []
        return sorted(p.stem for p in self.catalog.glob("*.yaml") if not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        return self.entry_file(name).is_file()

    def get(self, name: str) -> ZooEntry:
        path = self.entry_file(name)
        if not path.is_file():
            names = self.names()
            hint = close_matches(name, names)
            raise LtrainError(
                f"no zoo entry {name!r} in {self.catalog}."
                + (f" Close matches: {', '.join(hint)}." if hint else "")
                + (f" Entries: {', '.join(names[:20])}." if names and not hint else "")
                + ("" if names else " The catalogue is empty: push one with ltrain ... zoo.push=NAME.")
                + " (The catalogue is $LTRAIN_ZOO_CATALOG, default $LTRAIN_ZOO_HOME/catalog.)"
            )
        try:
            return ZooEntry.from_dict(yaml.safe_load(path.read_text()))
        except (yaml.YAMLError, TypeError, AttributeError) as e:
            raise LtrainError(
                f"zoo entry file {path} is unreadable ({e}): fix it or remove it with ltrain-zoo rm {name}"
            ) from e

    def list(self) -> list[ZooEntry]:
        """Every readable entry (an unreadable entry file is skipped here; ``verify`` reports it)."""
        entries = []
        for name in self.names():
            try:
                entries.append(self.get(name))
            except LtrainError:
                continue
        return entries

    def lineage(self, name: str) -> list[str]:
        """``[name, parent, grandparent, ...]``; a parent no longer in the catalogue ends the chain, marked ``(removed)``."""
        chain, current = [], name
        while current and current not in chain:
            if not self.exists(current):
                chain.append(f"{current} (removed)")
                break
            chain.append(current)
            current = self.get(current).parent
        return chain

    def children(self, name: str) -> list[str]:
        return [e.name for e in self.list() if e.parent == name]

    # checking and loading
    def verify(self, name: str | None = None) -> list[VerifyResult]:
        """Recompute every file's size and sha256 against the entry (one entry, or all)."""
        return [self._verify(n) for n in ([name] if name else self.names())]

    def _verify(self, name: str) -> VerifyResult:
        try:
            entry = self.get(name)
        except LtrainError as e:
            return VerifyResult(name, [str(e)])
        folder, problems = self.folder(entry), []
        if not folder.is_dir():
            return VerifyResult(name, [f"weights folder missing: {folder}"])
        for file, expected in entry.files.items():
            path = folder / file
            if not path.is_file():
                problems.append(f"{file} missing ({path})")
            elif path.stat().st_size != expected["size"]:
                problems.append(f"{file} has {path.stat().st_size} bytes, the entry says {expected['size']}")
            elif sha256_file(path) != expected["sha256"]:
                problems.append(f"{file} checksum mismatch (corrupted): {path}")
        return VerifyResult(name, problems)

    def check(self, name: str) -> ZooEntry:
        """The entry, after verifying its files; an LtrainError that says what to do if they are damaged."""
        entry = self.get(name)
        result = self._verify(name)
        if not result.ok:
            raise LtrainError(
                f"zoo entry {name!r} is damaged: {'; '.join(result.problems)}.\n"
                f"  Restore the folder {self.folder(entry)} from a copy, or re-create the entry by re-running its "
                f"config (ltrain-zoo show {name}) and pushing again with zoo.overwrite=true."
            )
        return entry

    def load_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """The entry's weights (checksums verified first)."""
        from safetensors.torch import load_file

        entry = self.check(name)
        return load_file(str(self.folder(entry) / WEIGHTS_FILE), device="cpu")

    def timm_pretrained_cfg(self, name: str) -> dict[str, Any]:
        """A ``pretrained_cfg_overlay`` that makes timm load the entry as pretrained weights (timm archs only).

        ``timm.create_model(arch, pretrained=True, num_classes=K, pretrained_cfg_overlay=zoo.timm_pretrained_cfg(name))``
        — timm drops the classifier when ``K`` differs from the entry's classes and adapts the first conv.
        """
        entry = self.check(name)
        folder = self.folder(entry)
        saved = json.loads((folder / CONFIG_FILE).read_text())
        cfg = dict(saved.get("pretrained_cfg") or {})
        if entry.architecture == "mlp" or not cfg:
            raise LtrainError(
                f"zoo entry {name!r} is an ltrain MLP, not a timm model: use ltrain.zoo.load_model({name!r})"
            )
        cfg.update(file=str(folder / WEIGHTS_FILE), num_classes=entry.num_classes, source="file")
        return cfg

    # writing
    def check_writable(self) -> None:
        """Refuse a store or catalogue that cannot be written (a file in the way, no permission), without writing."""
        for what, path in (("the weight store $LTRAIN_ZOO_HOME", self.home), ("the catalogue", self.catalog)):
            existing = path
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not existing.is_dir():
                raise LtrainError(
                    f"{what} {path} cannot be used: {existing} is a file, not a folder. Point LTRAIN_ZOO_HOME "
                    "(and LTRAIN_ZOO_CATALOG, if set) at a folder"
                )
            if not os.access(existing, os.W_OK | os.X_OK):
                raise LtrainError(
                    f"{what} {path} cannot be written: no write permission on {existing}. Point LTRAIN_ZOO_HOME "
                    "(and LTRAIN_ZOO_CATALOG, if set) at a folder you can write"
                )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the catalogue's and the store's lock files (always in that order, so two writers cannot deadlock)."""
        from filelock import FileLock, Timeout

        self.catalog.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        locks = [FileLock(str(self.catalog / ".zoo.lock")), FileLock(str(self.home / ".zoo.lock"))]
        try:
            with locks[0].acquire(timeout=LOCK_TIMEOUT_S), locks[1].acquire(timeout=LOCK_TIMEOUT_S):
                yield
        except Timeout as e:
            raise LtrainError(
                f"another process has held the zoo lock ({e.lock_file}) for {LOCK_TIMEOUT_S:.0f} s; "
                "wait for it (a push or rm in progress) and try again"
            ) from e

    def push(
        self,
        model: nn.Module,
        name: str,
        *,
        model_cfg: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        input_shape: Sequence[int],
        dataset: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float | Sequence[float]] | None = None,
        seeds: Sequence[int] = (),
        config: Mapping[str, Any] | None = None,
        parent: str | None = None,
        pretrained: str | None = None,
        description: str = "",
        overwrite: bool = False,
    ) -> ZooEntry:
        """Save ``model`` as entry ``name``; returns the entry.

        ``model_cfg`` is the model config group (``name`` + its keys) that rebuilds the network with
        ``build_model``; for a timm model it may be omitted (taken from the model's ``pretrained_cfg``).
        ``preprocessing`` is ``{mean, std}`` of the inputs (pixels in [0, 1]; timm's convention), written into
        timm's ``config.json`` so timm's own transforms prepare inputs the way training did. ``metrics`` maps a
        metric to its value, or its values over ``seeds``. ``parent`` is the entry it was fine-tuned from
        (lineage); when None and ``pretrained`` is ``zoo:X``, the parent is X.
        """
        check_name(name)
        overwrite = bool_option(overwrite, "overwrite")
        self.check_writable()
        if self.exists(name) and not overwrite:
            raise LtrainError(
                f"zoo entry {name!r} exists: choose another name, or replace it with overwrite "
                f"(zoo.overwrite=true / ltrain-zoo push --force)"
            )
        if parent is None and pretrained and str(pretrained).startswith("zoo:"):
            parent = str(pretrained)[len("zoo:") :]
        if parent == name:  # overwriting the entry it started from: the old version is gone, not a parent
            parent = None
        if parent is not None and not self.exists(parent):
            raise LtrainError(
                f"parent entry {parent!r} is not in the catalogue {self.catalog}: push it first, or leave parent unset"
            )
        model_cfg = _model_cfg(model, model_cfg)
        num_classes = int(num_classes if num_classes is not None else _num_classes(model))
        version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        staging = self.home / "models" / name / f".tmp-{os.getpid()}-{version}"
        try:
            preprocessing = _plain(dict(preprocessing or {}))
            _write_model_folder(model, model_cfg, num_classes, list(input_shape), preprocessing, staging)
            files = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in sorted(staging.iterdir())}
            entry = ZooEntry(
                name=name,
                architecture=model_cfg["name"].split(".", 1)[0],
                model=model_cfg,
                num_classes=num_classes,
                input_shape=[int(s) for s in input_shape],
                folder=f"models/{name}/{version}",
                files=files,
                created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                description=description or "",
                parent=parent,
                pretrained=str(pretrained) if pretrained else None,
                dataset=_plain(dict(dataset or {})),
                preprocessing=preprocessing,
                metrics=summarize_metrics(metrics or {}),
                seeds=[int(s) for s in seeds],
                config=_plain(dict(config or {})),
                versions=_versions(),
            )
            text = entry.to_yaml().encode()
            with self._locked():
                _remove_dead_staging(self.home / "models" / name)
                if self.exists(name) and not overwrite:
                    raise LtrainError(
                        f"zoo entry {name!r} was pushed by another process meanwhile: choose another name"
                    )
                old = self.get(name) if self.exists(name) else None
                os.rename(staging, self.home / entry.folder)  # atomic: the folder appears whole
                _fsync_dir(self.home / entry.folder)
                _fsync_dir(self.home / "models" / name)
                atomic_write_bytes(self.entry_file(name), text)  # the commit point
                _fsync_dir(self.catalog)
                if old is not None and old.folder != entry.folder:
                    shutil.rmtree(self.home / old.folder, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return entry

    def rm(self, name: str) -> ZooEntry | None:
        """Remove the entry file, then its weights folder; returns what was removed (None: the file was unreadable)."""
        path = self.entry_file(name)
        try:
            entry = self.get(name)
        except LtrainError:
            if not path.is_file():
                raise
            entry = None  # an unreadable entry file: remove it; its weights folder is unknown
        with self._locked():
            path.unlink()  # the catalogue changes here, at once
            _fsync_dir(self.catalog)
            if entry is not None:
                shutil.rmtree(self.home / entry.folder, ignore_errors=True)
                with contextlib.suppress(OSError):  # only if no other version or staging is left
                    (self.home / "models" / name).rmdir()
        return entry


# --- helpers ------------------------------------------------------------------------------------------------
def _model_cfg(model: nn.Module, model_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    if model_cfg is not None:
        cfg = _plain(dict(model_cfg))
    elif getattr(model, "pretrained_cfg", None):
        cfg = {"name": model.pretrained_cfg["architecture"]}
    else:
        raise LtrainError(
            "push: pass model_cfg (the model config group, e.g. {'name': 'mlp', 'hidden': [...]}) "
            "for a network that is not a timm model"
        )
    cfg.pop("pretrained", None)  # the entry holds the weights; where they first came from is recorded apart
    return cfg


def _num_classes(model: nn.Module) -> int:
    if hasattr(model, "num_classes"):
        return model.num_classes
    if isinstance(getattr(model, "head", None), nn.Linear):  # ltrain's MLP
        return model.head.out_features
    raise LtrainError("push: pass num_classes (the model has neither .num_classes nor a Linear .head)")


def _write_model_folder(
    model: nn.Module,
    model_cfg: dict[str, Any],
    num_classes: int,
    input_shape: list[int],
    preprocessing: dict[str, Any],
    folder: Path,
) -> None:
    """``config.json`` + ``model.safetensors``: timm's ``save_for_hf`` for timm models, the same layout for the MLP."""
    folder.mkdir(parents=True)
    if model_cfg["name"] != "mlp" and hasattr(model, "pretrained_cfg"):
        from timm.models import save_for_hf

        data_config = {"input_size": tuple(input_shape), **preprocessing}
        if any(not t.is_contiguous() for t in model.state_dict().values()):  # model.channels_last: safetensors
            model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # stores dense NCHW only
        save_for_hf(model, str(folder), safe_serialization=True, data_config=data_config)
    else:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        info = {
            "architecture": "mlp",
            "num_classes": num_classes,
            "library": "ltrain",
            "model_args": {k: v for k, v in model_cfg.items() if k != "name"},
            "input_size": input_shape,
            **preprocessing,
            "note": "an ltrain MLP: rebuild with ltrain.zoo.load_model (timm's local-dir: cannot build it)",
        }
        (folder / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_dead_staging(models_dir: Path) -> None:
    """Delete ``.tmp-<pid>-...`` folders left by pushes that were killed (their process is gone)."""
    if not models_dir.is_dir():
        return
    for tmp in models_dir.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _plain(obj: Any) -> Any:
    """YAML-safe plain data (tuples to lists, paths and other objects to strings)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _versions() -> dict[str, str]:
    import lightning
    import timm

    return {
        "ltrain": str(__version__),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
        "lightning": str(lightning.__version__),
    }
