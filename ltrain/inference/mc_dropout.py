"""MC dropout: T stochastic predictions with every dropout active and every other layer in eval mode.

    pred = mc_dropout(model, x, samples=30, seed=0)
    pred.mean, pred.std, pred.entropy, pred.mutual_info, pred.predicted, pred.agreement

What this adds to the ecosystem's wrappers (baal's ``MCDropoutModule``, torch-uncertainty): real
samples on timm models whose ``drop_rate`` is functional (see :mod:`ltrain.inference.sites`), batch
norm never touched (the model stays in eval mode; modes are restored even on error), and a fast
path: the part of the network before the first dropout is deterministic, so it runs ONCE and only
the stochastic tail runs for the T samples, batched (the tail's input repeated T times along the
batch dimension, in chunks that respect a memory limit). Fast and naive paths use the same masks
and agree within 1e-6 (tests/inference/test_mc_dropout.py).

Where the fast path splits:
- timm models: ``forward_features`` + ``forward_head(pre_logits=True)`` (pooling, norm) is the
  prefix when the only dropout is the head's (functional ``drop_rate`` or a ``head_drop`` module);
  the tail is dropout + ``get_classifier()``. Checked on the real model before use.
- ``nn.Sequential`` (the chapter's MLP): split before the module holding the first dropout.
- anything else, or dropout inside a timm trunk: the naive path (T full passes), said in ``.path``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ltrain.errors import LtrainError
from ltrain.inference.sites import (
    DropoutMasks,
    DropoutSite,
    _seed_for,
    dropout_census,
    eval_mode_restored,
    functional_head_dropout,
    is_timm_classifier,
    module_sites,
    stays_in_eval,
)
from ltrain.inference.uncertainty import expected_entropy, predictive_entropy
from ltrain.models.network import find_network

PATHS = ("auto", "fast", "naive")


@dataclass
class MCPrediction:
    """T sampled class distributions for N inputs and the uncertainty summaries derived from them.

    Attributes:
        samples: (T, N, C) softmax probabilities, one slice per MC sample.
        seed: the seed of the dropout masks (the same seed gives the same samples).
        path: ``fast`` (deterministic prefix once, tail batched) or ``naive`` (T full passes).
        note: why the naive path was taken, when it was.
        sites: names of the dropout sites that were sampled.
    """

    samples: torch.Tensor
    seed: int
    path: str
    note: str = ""
    sites: list[str] = field(default_factory=list)

    @property
    def mean(self) -> torch.Tensor:
        """(N, C) mean predictive probabilities: the MC-dropout prediction."""
        return self.samples.mean(0)

    @property
    def std(self) -> torch.Tensor:
        """(N, C) per-class standard deviation over the samples (unbiased, T - 1)."""
        return self.samples.std(0) if len(self.samples) > 1 else torch.zeros_like(self.samples[0])

    @property
    def entropy(self) -> torch.Tensor:
        """(N,) predictive entropy H[mean] in nats: total uncertainty."""
        return predictive_entropy(self.mean)

    @property
    def expected_entropy(self) -> torch.Tensor:
        """(N,) mean entropy of the individual samples: the aleatoric part."""
        return expected_entropy(self.samples)

    @property
    def mutual_info(self) -> torch.Tensor:
        """(N,) mutual information between prediction and weights (BALD): the epistemic part."""
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    @property
    def predicted(self) -> torch.Tensor:
        """(N,) class of highest mean probability."""
        return self.mean.argmax(-1)

    @property
    def agreement(self) -> torch.Tensor:
        """(N,) fraction of samples whose own arg-max is the predicted class."""
        return (self.samples.argmax(-1) == self.predicted).float().mean(0)


def mc_dropout(
    model: nn.Module,
    x: torch.Tensor,
    samples: int = 30,
    *,
    seed: int | None = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512.0,
    path: str = "auto",
    drop_path: bool = False,
) -> MCPrediction:
    """MC-dropout prediction of ``model`` (logits out) on the batch ``x``.

    Args:
        samples: T, the number of stochastic predictions.
        seed: seed of the dropout masks; None draws one from torch's global generator (so a run
            seeded with ``seed_everything`` is reproducible) and records it in the result.
        chunk_size: MC samples per batched pass of the stochastic tail; None sizes chunks so that
            the tail's activations stay under ``max_memory_mb``.
        path: ``auto`` (fast when the network allows it, else naive), ``fast`` (error if it cannot)
            or ``naive`` (T full passes; the reference the fast path is tested against).
        drop_path: also sample timm's DropPath (stochastic depth). It sits in the trunk, so the fast
            path then saves nothing and the naive path runs.

    Raises:
        LtrainError: the model has no dropout (T identical samples are no uncertainty estimate),
            or the arguments are invalid.
    """
    if samples < 1:
        raise LtrainError(f"mc.samples must be at least 1, got {samples}")
    if path not in PATHS:
        raise LtrainError(f"mc.path={path!r} is not one of {list(PATHS)}")
    if chunk_size is not None and chunk_size < 1:
        raise LtrainError(f"mc.chunk_size must be positive or null, got {chunk_size}")
    net = find_network(model, None, "mc_dropout")
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    timm_model = is_timm_classifier(net)
    # A timm model's own dropouts are modules, its functional head dropout (hooked below) or attention
    # dropout inside fused attention (its attn_drop module then never runs: found below, for free). Any
    # other network may call F.dropout anywhere: one pass on one example counts every dropout call.
    census = None if timm_model else dropout_census(net, x[:1], drop_path)
    if census is not None and census.unhooked(False):
        return _sample_in_train_mode(net, x, samples, seed, drop_path, path, census.describe())
    with eval_mode_restored(net), torch.no_grad(), DropoutMasks(module_sites(net, drop_path), seed, len(x)) as masks:
        features = None
        if timm_model:
            masks.watch()
            features = net.forward_features(x) if path != "naive" else net.forward_features(x[:2])
            trunk_fires = list(masks.inert_fires)
            masks.watch()
            net.forward_head(features[:1], pre_logits=True)
            silent = [s for s in masks.sites if s not in trunk_fires and s not in masks.inert_fires]
            if silent:  # e.g. timm Attention with fused_attn: dropout_p=attn_drop.p inside the SDPA kernel
                masks.close()
                why = f"dropout modules that never run, their rate applied inside fused attention: {silent[0].name}"
                return _sample_in_train_mode(net, x, samples, seed, drop_path, path, why)
            head = functional_head_dropout(net, features[:2])
            if head is not None:
                masks.add(head)
            masks.watch()
            masks.inert_fires = trunk_fires
        if not masks.sites:
            raise LtrainError(
                f"{type(net).__name__} has no dropout (no nn.Dropout* module with p > 0 and no timm drop_rate), so "
                "every MC sample would be identical: that is no uncertainty estimate. Train a model with dropout: "
                "model.dropout=0.2 for the MLP, model.drop_rate=0.2 for timm models (or the risk_sensitive preset)."
            )
        names = [s.name for s in masks.sites]
        tail, note = (None, "path=naive requested") if path == "naive" else _plan_fast(net, x, features, masks)
        if tail is None and path == "fast":
            raise LtrainError(f"mc.path=fast is not possible for {type(net).__name__}: {note}. Use mc.path=auto")
        if tail is None:
            logits = _naive(net, x, samples, masks)
            _refuse_identical(net, logits, f"sites {names}")
            return MCPrediction(logits.float().softmax(-1), seed, "naive", note, names)
        prefix_out, run_tail = tail
        logits = _batched(run_tail, prefix_out, samples, masks, chunk_size, max_memory_mb)
        _refuse_identical(net, logits, f"sites {names}")
        return MCPrediction(logits.float().softmax(-1), seed, "fast", "", names)


def _sample_in_train_mode(
    net: nn.Module, x: torch.Tensor, samples: int, seed: int, drop_path: bool, path: str, why: str
) -> MCPrediction:
    """Dropout ltrain's hooks cannot reach (F.dropout in user code, dropout_p of fused attention): sample it
    as training mode applies it, every other layer held in inference mode."""
    if path == "fast":
        raise LtrainError(
            f"mc.path=fast is not possible for {type(net).__name__}: it applies dropout outside what ltrain can "
            f"hook ({why}). Use mc.path=auto"
        )
    logits = _train_mode_samples(net, x, samples, seed, drop_path)
    _refuse_identical(net, logits, why)
    return MCPrediction(logits.float().softmax(-1), seed, "train_mode", f"sampled in training mode: {why}", [])


def _refuse_identical(net: nn.Module, logits: torch.Tensor, why: str) -> None:
    """T > 1 identical samples are no uncertainty estimate: say so instead of returning them."""
    if len(logits) > 1 and all(torch.equal(logits[0], t) for t in logits[1:]):
        raise LtrainError(
            f"every MC-dropout sample of {type(net).__name__} came out identical ({why}): no dropout "
            "ltrain can sample changes the output, so this would be no uncertainty estimate. Add dropout the network "
            "applies in training mode (nn.Dropout, F.dropout(..., training=self.training), timm drop_rate)"
        )


def _train_mode_samples(net: nn.Module, x: torch.Tensor, samples: int, seed: int, drop_path: bool) -> torch.Tensor:
    """(T, N, C) logits from T passes with dropout ON as training mode applies it, all else in inference mode.

    Every module is switched to training mode except the ones whose training mode is not dropout: batch
    norm (and any layer with running statistics) keeps its running statistics untouched, RReLU its mean
    slope, DropPath stays off unless ``drop_path``. Sample t draws from torch's generator seeded with
    (seed, t), forked so the caller's random state is untouched.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    out = []
    with eval_mode_restored(net), torch.no_grad(), torch.random.fork_rng(devices=devices):
        for m in net.modules():
            m.training = not stays_in_eval(m, drop_path)
        for t in range(samples):
            torch.manual_seed(_seed_for(seed, 0, t))
            out.append(net(x))
    return torch.stack(out)


def _naive(net: nn.Module, x: torch.Tensor, samples: int, masks: DropoutMasks) -> torch.Tensor:
    """(T, N, C) logits from T full forward passes: the slow reference."""
    out = []
    for t in range(samples):
        with masks.sampling([t]):
            out.append(net(x))
    return torch.stack(out)


TailPlan = tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def _plan_fast(
    net: nn.Module, x: torch.Tensor, features: torch.Tensor | None, masks: DropoutMasks
) -> tuple[TailPlan | None, str]:
    """The deterministic prefix's output and a function running the stochastic tail, or (None, reason)."""
    if features is not None:
        return _plan_timm(net, features, masks)
    if isinstance(net, nn.Sequential):
        return _plan_sequential(net, x, masks)
    return None, f"{type(net).__name__} is neither a timm model nor an nn.Sequential, so ltrain cannot split it"


def _plan_timm(net: nn.Module, features: torch.Tensor, masks: DropoutMasks) -> tuple[TailPlan | None, str]:
    if masks.inert_fires:
        return None, f"dropout inside forward_features ({masks.inert_fires[0].name})"
    masks.watch()
    z = net.forward_head(features, pre_logits=True)
    head_sites = [s for s in masks.sites if s.pre_hook] + list(dict.fromkeys(masks.inert_fires))
    if len(head_sites) != 1:
        return None, f"{len(head_sites)} dropout sites in the head ({[s.name for s in head_sites]}), expected one"
    (site,) = head_sites
    if not site.pre_hook and not torch.equal(masks.last_output[id(site)].reshape(z.shape), z):
        return None, f"forward_head does more after its dropout {site.name} than the classifier"
    classifier = net.get_classifier()
    if not isinstance(classifier, nn.Module) or isinstance(classifier, nn.Identity):
        raise LtrainError(f"{type(net).__name__} has no classifier (num_classes=0?): MC dropout needs class logits")
    if not torch.allclose(classifier(z[:2]), net.forward_head(features[:2]), rtol=1e-5, atol=1e-6):
        return None, "forward_head is not get_classifier() applied to forward_head(pre_logits=True)"

    def tail(z_rep: torch.Tensor) -> torch.Tensor:
        dropped = masks.apply(site, z_rep, 0)
        samples, masks.samples = masks.samples, None  # the pre-hook must not drop the same units twice
        try:
            return classifier(dropped)
        finally:
            masks.samples = samples

    return (z, tail), ""


def _plan_sequential(net: nn.Sequential, x: torch.Tensor, masks: DropoutMasks) -> tuple[TailPlan | None, str]:
    site_modules = {id(s.module) for s in masks.sites}
    prefix, tail = split_sequential(net, site_modules)
    masks.watch()
    z = nn.Sequential(*prefix)(x)
    if masks.inert_fires:  # a site module reused inside the prefix: not deterministic after all
        return None, f"dropout {masks.inert_fires[0].name} runs before the split point"
    return (z, nn.Sequential(*tail)), ""


def split_sequential(seq: nn.Sequential, site_modules: set[int]) -> tuple[list[nn.Module], list[nn.Module]]:
    """(prefix, tail) modules of ``seq`` split right before the first dropout site, through nested Sequentials."""
    children = list(seq)
    for i, child in enumerate(children):
        inside = any(id(m) in site_modules for m in child.modules())
        if not inside:
            continue
        if isinstance(child, nn.Sequential) and id(child) not in site_modules:
            prefix, tail = split_sequential(child, site_modules)
            return children[:i] + prefix, tail + children[i + 1 :]
        return children[:i], children[i:]
    return children, []


def _batched(
    run_tail: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    samples: int,
    masks: DropoutMasks,
    chunk_size: int | None,
    max_memory_mb: float,
) -> torch.Tensor:
    """(T, N, C) logits: the tail run on ``z`` repeated for chunks of samples along the batch dimension."""
    n = z.shape[0]
    with masks.sampling([0]):  # sample 0 alone, measuring what one sample of the tail allocates
        first, bytes_per_sample = _measure(run_tail, z)
    if chunk_size is None:
        chunk_size = max(1, int(max_memory_mb * 2**20 // max(bytes_per_sample, 1)))
    out = [first.reshape(1, n, -1)]
    for start in range(1, samples, chunk_size):
        ts = range(start, min(samples, start + chunk_size))
        z_rep = z.repeat(len(ts), *([1] * (z.ndim - 1)))  # (len(ts) * N, ...), sample-major rows
        with masks.sampling(ts):
            out.append(run_tail(z_rep).reshape(len(ts), n, -1))
    return torch.cat(out)


def _measure(run_tail: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The tail's output on ``z`` and the bytes of every activation it produced (input included)."""
    total = [z.numel() * z.element_size()]

    def count(module, args, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handle = nn.modules.module.register_module_forward_hook(count)
    try:
        out = run_tail(z)
    finally:
        handle.remove()
    return out, total[0]


__all__ = ["DropoutSite", "MCPrediction", "eval_mode_restored", "mc_dropout", "split_sequential"]
