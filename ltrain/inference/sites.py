"""Where a network drops units, and how ltrain samples those drops itself.

MC dropout needs every dropout of a network active while everything else (batch norm above all)
stays in inference mode. Putting the model in train mode moves BN statistics; switching on only
``nn.Dropout`` modules (what common wrappers do) misses timm's *functional* head dropout:
``forward_head`` of ResNet and EfficientNet calls ``F.dropout(x, p=self.drop_rate,
training=self.training)``, so those wrappers return T identical "samples".

ltrain keeps the WHOLE model in eval mode and applies the drops itself through hooks:

- a dropout module (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout``,
  optionally timm's ``DropPath``) is an identity in eval mode; a forward hook replaces its output by
  the dropped-out input, with the module's own rate and semantics;
- timm's functional head dropout is the last thing ``forward_head`` does before the classifier (timm
  1.0.31: resnet.py and efficientnet.py ``forward_head``); a forward *pre*-hook on
  ``model.get_classifier()`` drops the classifier's input instead. A probe checks that claim on the
  real model before relying on it (:func:`functional_head_dropout`).

The masks come from :class:`DropoutMasks`, one generator seeded per (seed, site, sample), so the
same seed gives the same samples whether the T samples run one at a time or batched in chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ltrain.errors import LtrainError
from ltrain.models.network import eval_mode_restored
from ltrain.seeding import Stream, derive_seed

# torch's alpha dropout constants (ATen Dropout.cpp): SELU's alpha * lambda.
_ALPHA = 1.7580993408473766


@dataclass(frozen=True, eq=False)
class DropoutSite:
    """One place where the network drops units.

    Attributes:
        name: the module path (or ``"<forward_head F.dropout>"`` for timm's functional head dropout).
        kind: ``dropout`` (elementwise), ``channel`` (whole channels: Dropout1d/2d/3d), ``alpha``,
            ``feature_alpha`` (AlphaDropout / FeatureAlphaDropout: keep SELU's mean and variance),
            or ``path`` (timm DropPath: whole samples of a residual branch).
        p: the drop probability.
        module: the module whose call is hooked.
        pre_hook: True when the drop is applied to ``module``'s input (functional head dropout).
        scale: rescale kept units by 1/(1-p) (always for dropout; DropPath's ``scale_by_keep``).
    """

    name: str
    kind: str
    p: float
    module: nn.Module
    pre_hook: bool = False
    scale: bool = True


def _module_kind(module: nn.Module, drop_path: bool) -> tuple[str, float, bool] | None:
    if isinstance(module, (nn.AlphaDropout,)):
        return "alpha", module.p, True
    if isinstance(module, nn.FeatureAlphaDropout):
        return "feature_alpha", module.p, True
    if isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
        return "channel", module.p, True
    if isinstance(module, nn.Dropout):
        return "dropout", module.p, True
    if drop_path:
        from timm.layers import DropPath

        if isinstance(module, DropPath):
            return "path", float(module.drop_prob), bool(module.scale_by_keep)
    return None


def module_sites(model: nn.Module, drop_path: bool = False) -> list[DropoutSite]:
    """Every dropout module of ``model`` with a rate above zero (and DropPath if ``drop_path``)."""
    sites = []
    for name, module in model.named_modules():
        found = _module_kind(module, drop_path)
        if found and found[1] > 0:
            kind, p, scale = found
            sites.append(DropoutSite(name or type(module).__name__, kind, float(p), module, scale=scale))
    return sites


def is_timm_classifier(model: nn.Module) -> bool:
    """True for models with timm's ``forward_features`` / ``forward_head`` / ``get_classifier`` interface."""
    return all(callable(getattr(model, a, None)) for a in ("forward_features", "forward_head", "get_classifier"))


def functional_head_dropout(model: nn.Module, features: torch.Tensor) -> DropoutSite | None:
    """timm's functional head dropout as a site, if ``model`` has one (probed on a few feature rows).

    With every module in eval mode, only the top-level ``model.training`` flag is switched on and
    ``forward_head(features, pre_logits=True)`` is compared with its eval output: a functional dropout
    of rate ``model.drop_rate`` zeroes some units and scales the rest by 1/(1-p). Anything else (no
    change: the rate lives in a dropout module, already a site; another change: a head ltrain does not
    understand) is reported instead of being guessed at.
    """
    p = float(getattr(model, "drop_rate", 0.0) or 0.0)
    if p <= 0 or not is_timm_classifier(model):
        return None
    was_training = model.training
    z_eval = model.forward_head(features, pre_logits=True)
    devices = [features.device] if features.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        model.training = True  # the top-level flag only: every submodule stays in eval mode
        try:
            z_train = model.forward_head(features, pre_logits=True)
        finally:
            model.training = was_training
    if torch.equal(z_train, z_eval):
        return None
    kept = z_train != 0
    if z_train.shape != z_eval.shape or not torch.allclose(z_train[kept], z_eval[kept] / (1 - p), rtol=1e-4, atol=1e-6):
        raise LtrainError(
            f"{type(model).__name__}.forward_head changes in training mode in a way that is not a dropout of rate "
            f"drop_rate={p} before the classifier, so ltrain cannot sample it while keeping the rest in eval mode. "
            "Rebuild the model with drop_rate=0 and an nn.Dropout in the head, or report the architecture."
        )
    return DropoutSite("<forward_head F.dropout>", "dropout", p, model.get_classifier(), pre_hook=True)


_DROPOUT_FUNCTIONS = {
    F.dropout: "F.dropout",
    F.dropout1d: "F.dropout1d",
    F.dropout2d: "F.dropout2d",
    F.dropout3d: "F.dropout3d",
    F.alpha_dropout: "F.alpha_dropout",
    F.feature_alpha_dropout: "F.feature_alpha_dropout",
    torch.dropout: "torch.dropout",
    torch.alpha_dropout: "torch.alpha_dropout",
    torch.feature_dropout: "torch.feature_dropout",
    torch.feature_alpha_dropout: "torch.feature_alpha_dropout",
}


@dataclass
class DropoutCensus:
    """Every dropout one training-mode pass applies: inside dropout modules, or elsewhere (functional)."""

    in_modules: int = 0
    functional: list[str] = field(default_factory=list)  # e.g. "F.dropout(p=0.3) in Net", "SDPA dropout_p=0.1 ..."

    def unhooked(self, timm_head: bool) -> bool:
        """True when dropout runs outside modules beyond timm's functional head dropout (which is hooked)."""
        return len(self.functional) > (1 if timm_head else 0) or any("attention" in f for f in self.functional)

    def describe(self) -> str:
        parts = [f"{self.in_modules} dropout module call(s)", *self.functional[:4]]
        return ", ".join(parts)


class _Census(TorchFunctionMode):
    def __init__(self, census: DropoutCensus, depth: list[int]):
        super().__init__()
        self.census, self.depth = census, depth

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _DROPOUT_FUNCTIONS.get(func)
        if name is not None:
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", kwargs.get("train", args[2] if len(args) > 2 else True))
            if training and p > 0:
                if self.depth[0] > 0:
                    self.census.in_modules += 1
                else:
                    self.census.functional.append(f"{name}(p={p})")
        elif func is F.scaled_dot_product_attention:
            p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
            if p > 0:
                self.census.functional.append(f"attention dropout_p={p} (scaled_dot_product_attention)")
        return func(*args, **kwargs)


def stays_in_eval(module: nn.Module, drop_path: bool) -> bool:
    """Whether MC dropout keeps ``module`` in inference mode: its training mode is not dropout.

    Batch norm (any layer with running statistics) would move its statistics, RReLU draw random slopes,
    DropPath / DropBlock drop whole branches (sampled only with ``drop_path``).
    """
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.RReLU)):
        return True
    if type(module).__name__ in ("DropPath", "DropBlock2d") and not drop_path:
        return True
    return getattr(module, "running_mean", None) is not None or bool(getattr(module, "track_running_stats", False))


def dropout_census(model: nn.Module, x: torch.Tensor, drop_path: bool = False) -> DropoutCensus:
    """Run ``model`` once with dropout as training mode applies it (norm layers in eval) and count the dropouts.

    A ``TorchFunctionMode`` sees every dropout call, whoever makes it: a dropout module, ``F.dropout`` in
    a user's forward, ``scaled_dot_product_attention(dropout_p=...)`` in fused attention. Modes are
    restored and the random state is forked, so the caller sees no side effect.
    """
    census, depth = DropoutCensus(), [0]
    sites = [m for m in model.modules() if _module_kind(m, drop_path) is not None]
    handles = []
    for m in sites:
        handles.append(m.register_forward_pre_hook(lambda *_: depth.__setitem__(0, depth[0] + 1)))
        handles.append(m.register_forward_hook(lambda *_: depth.__setitem__(0, depth[0] - 1)))
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with eval_mode_restored(model), torch.no_grad(), torch.random.fork_rng(devices=devices):
            for m in model.modules():
                m.training = not stays_in_eval(m, drop_path)
            with _Census(census, depth):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return census


def _seed_for(seed: int, site_index: int, sample: int) -> int:
    """A distinct generator seed per (seed, site, sample): masks do not depend on chunking."""
    return derive_seed(Stream.MC_MASK, seed, site_index, sample)


class DropoutMasks:
    """Hooks that apply seeded dropout masks at every site while the model itself stays in eval mode.

    Rows of the tensors flowing through the network are laid out sample-major: rows
    ``[i * n, (i + 1) * n)`` belong to MC sample ``samples[i]``, for ``n`` inputs. Sites are numbered
    by the order in which they fire during one pass, so the k-th drop of sample t gets the same mask
    in a full pass as in a batched pass of the stochastic tail.

    Use as a context manager (hooks are removed on exit); outside :meth:`sampling` the hooks only
    count how often each site fired (to check where the deterministic prefix ends).
    """

    def __init__(self, sites: Sequence[DropoutSite], seed: int, n: int):
        self.seed, self.n = seed, n
        self.sites: list[DropoutSite] = []
        self.samples: Sequence[int] | None = None  # None: inactive (hooks pass values through)
        self.fired = 0
        self.inert_fires: list[DropoutSite] = []
        self.last_output: dict[int, torch.Tensor] = {}
        self._handles: list = []
        for site in sites:
            self.add(site)

    # --- hooks ------------------------------------------------------------------------------
    def add(self, site: DropoutSite) -> None:
        self.sites.append(site)
        if site.pre_hook:

            def pre(module, args, site=site):
                out = self._on_fire(site, args[0])
                return None if out is None else (out, *args[1:])

            self._handles.append(site.module.register_forward_pre_hook(pre))
        else:
            self._handles.append(
                site.module.register_forward_hook(lambda m, a, out, site=site: self._on_fire(site, out))
            )

    def _on_fire(self, site: DropoutSite, x: torch.Tensor) -> torch.Tensor | None:
        if self.samples is None:
            self.inert_fires.append(site)
            self.last_output[id(site)] = x
            return None
        out = self.apply(site, x, self.fired)
        self.fired += 1
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> DropoutMasks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- sampling ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def sampling(self, samples: Sequence[int]) -> Iterator[None]:
        """Within this block the hooks drop units for MC ``samples`` (the rows' sample-major layout)."""
        self.samples, self.fired = list(samples), 0
        try:
            yield
        finally:
            self.samples = None

    def watch(self) -> None:
        """Forget the fires counted so far (inactive hooks count; see :attr:`inert_fires`)."""
        self.inert_fires, self.last_output = [], {}

    def keep_mask(self, site: DropoutSite, site_index: int, sample: int, like: torch.Tensor) -> torch.Tensor:
        """The boolean keep-mask of one sample at one site, shaped to broadcast over ``like`` (n rows)."""
        return self._keep(site, site_index, [sample], like)[0]

    def _keep(self, site: DropoutSite, site_index: int, samples: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """(len(samples), *shape) boolean keep-masks, each sample's drawn from its own generator.

        A unit is kept when a uniform 24-bit integer is at least p * 2**24 (the resolution of a float32
        ``torch.rand``); integers are drawn straight into one preallocated buffer, about twice as fast
        as ``bernoulli_`` or ``rand() >= p`` on the CPU: on the chapter's MLP the masks are a large part
        of MC dropout's cost.
        """
        shape = tuple(like.shape)
        if site.kind in ("channel", "feature_alpha"):
            shape = shape[:2] + (1,) * (len(shape) - 2)
        elif site.kind == "path":
            shape = shape[:1] + (1,) * (len(shape) - 1)
        bits = torch.empty((len(samples), *shape), dtype=torch.int32)
        for row, t in zip(bits, samples, strict=True):
            row.random_(0, 2**24, generator=torch.Generator().manual_seed(_seed_for(self.seed, site_index, t)))
        return bits >= round(site.p * 2**24)

    def apply(self, site: DropoutSite, x: torch.Tensor, site_index: int) -> torch.Tensor:
        """``x`` (rows sample-major) dropped out at ``site`` for the active samples."""
        samples = self.samples or []
        if x.shape[0] != len(samples) * self.n:
            raise RuntimeError(
                f"dropout site {site.name} saw {x.shape[0]} rows, expected {len(samples)} samples x {self.n} inputs; "
                "MC dropout needs the batch dimension first and untouched up to every dropout"
            )
        keep = self._keep(site, site_index, samples, x[: self.n]).flatten(0, 1).to(x.device)
        p = site.p
        if site.kind in ("alpha", "feature_alpha"):
            keep = keep.to(x.dtype)
            a = 1.0 / ((_ALPHA**2 * p + 1) * (1 - p)) ** 0.5
            return x * (keep * a) + (keep - 1) * (_ALPHA * a) + _ALPHA * a * p
        out = x * keep
        if site.scale and p < 1:
            out.mul_(1 / (1 - p))
        return out
