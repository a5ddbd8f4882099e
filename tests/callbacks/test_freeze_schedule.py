"""FreezeSchedule on real Trainers, real digits and a LightningModule that is not ltrain's (network at ``.net``)."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from ltrain.callbacks import FreezeSchedule
from ltrain.errors import LtrainError
from ltrain.models import layer_groups
from tests.callbacks.freeze_helpers import PlainNet, make_trainer, params_of

LR = 0.05
LOW = 0.1  # the default schedule's lr_scale after unfreezing
FROZEN_AFTER_UNFREEZE = ["hidden0", "hidden1", "hidden2"]
UNFROZEN = ["hidden3", "hidden4", "head"]  # the default "top:3"


def bn_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in module.named_buffers()}


class Recorder(L.Callback):
    """Snapshots weights, BN buffers and param-group rates at the start and at each epoch's boundaries."""

    def __init__(self):
        self.start: dict = {}
        self.epoch_end: dict[int, dict] = {}
        self.rates: dict[int, dict[str, float]] = {}
        self.bn_modes: dict[int, dict[str, bool]] = {}
        self.trainable: dict[int, list[str]] = {}

    def on_train_start(self, trainer, pl_module):
        self.start = {
            "params": params_of(pl_module.net, [n for n, _ in pl_module.net.named_parameters()]),
            "buffers": bn_state(pl_module.net),
        }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:  # after FreezeSchedule's epoch-start work, before the first step of the epoch
            e = trainer.current_epoch
            self.rates[e] = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
            self.bn_modes[e] = {
                n: m.training for n, m in pl_module.net.named_modules() if isinstance(m, torch.nn.BatchNorm1d)
            }
            self.trainable[e] = [n for n, p in pl_module.net.named_parameters() if p.requires_grad]

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_end[trainer.current_epoch] = {
            "params": params_of(pl_module.net, [n for n, _ in pl_module.net.named_parameters()]),
            "buffers": bn_state(pl_module.net),
        }


def names_in(groups: list[str], model: torch.nn.Module, what: str = "params") -> list[str]:
    prefixes = tuple(f"{g}." for g in groups)
    source = model.named_parameters() if what == "params" else model.named_buffers()
    return [n for n, _ in source if n.startswith(prefixes)]


def default_schedule(cfg_factory, *overrides: str) -> FreezeSchedule:
    """conf/freeze/default.yaml (the book's recipe) as ``ltrain freeze=default`` builds it, for a module's ``net``."""
    cfg = cfg_factory("freeze=default", "freeze.model_attr=net", *overrides)
    return instantiate(cfg.freeze, _convert_="all")


def test_default_schedule_keeps_frozen_weights_and_bn_statistics_bit_identical(freeze_digits, cfg_factory):
    L.seed_everything(0)
    module, rec = PlainNet(), Recorder()
    schedule = default_schedule(cfg_factory, "freeze.phases.1.at_epoch=2")
    make_trainer([schedule, rec], max_epochs=4).fit(module, freeze_digits)
    net = module.net
    frozen_p, frozen_b = (
        names_in(["hidden0", "hidden1", "hidden2", "hidden3", "hidden4"], net),
        names_in(["hidden0", "hidden1", "hidden2", "hidden3", "hidden4"], net, "buffers"),
    )
    assert len(frozen_b) == 15  # running_mean, running_var, num_batches_tracked of 5 BN layers
    for epoch in (0, 1):  # the head-only phase: nothing below the head moves, not even BN statistics
        end = rec.epoch_end[epoch]
        assert all(torch.equal(end["params"][n], rec.start["params"][n]) for n in frozen_p)
        assert all(torch.equal(end["buffers"][n], rec.start["buffers"][n]) for n in frozen_b)
        assert not torch.equal(end["params"]["head.weight"], rec.start["params"]["head.weight"])
        assert not any(rec.bn_modes[epoch].values())
        assert rec.trainable[epoch] == ["head.weight", "head.bias"]
    # after unfreezing: the top 3 groups train at LR x 0.1, the rest stay bit-identical, their BN too
    assert rec.rates[1] == {"hidden0": 0, "hidden1": 0, "hidden2": 0, "hidden3": 0, "hidden4": 0, "head": LR}
    for epoch in (2, 3):
        assert rec.rates[epoch] == {**dict.fromkeys(FROZEN_AFTER_UNFREEZE, 0.0), **dict.fromkeys(UNFROZEN, LR * LOW)}
        assert rec.bn_modes[epoch] == {
            "hidden0.bn": False,
            "hidden1.bn": False,
            "hidden2.bn": False,
            "hidden3.bn": True,
            "hidden4.bn": True,
        }
    end = rec.epoch_end[3]
    still_frozen = names_in(FROZEN_AFTER_UNFREEZE, net) + names_in(FROZEN_AFTER_UNFREEZE, net, "buffers")
    assert all(
        torch.equal({**end["params"], **end["buffers"]}[n], {**rec.start["params"], **rec.start["buffers"]}[n])
        for n in still_frozen
    )
    moved = names_in(["hidden3", "hidden4"], net) + names_in(["hidden3", "hidden4"], net, "buffers")
    assert all(
        not torch.equal({**end["params"], **end["buffers"]}[n], {**rec.start["params"], **rec.start["buffers"]}[n])
        for n in moved
    )


def test_bn_train_policy_lets_frozen_statistics_move(freeze_digits):
    L.seed_everything(0)
    module, rec = PlainNet(), Recorder()
    make_trainer([FreezeSchedule([{"trainable": "head"}], bn="train", model_attr="net"), rec], max_epochs=1).fit(
        module, freeze_digits
    )
    assert rec.bn_modes[0]["hidden0.bn"] is True
    assert not torch.equal(
        rec.epoch_end[0]["buffers"]["hidden0.bn.running_mean"], rec.start["buffers"]["hidden0.bn.running_mean"]
    )
    assert torch.equal(rec.epoch_end[0]["params"]["hidden0.bn.weight"], rec.start["params"]["hidden0.bn.weight"])


def test_frozen_parameters_have_no_optimizer_state(freeze_digits):
    L.seed_everything(0)
    module = PlainNet(optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    trainer = make_trainer([FreezeSchedule([{"trainable": "head"}], model_attr="net")], max_epochs=1)
    trainer.fit(module, freeze_digits)
    optimizer = trainer.optimizers[0]
    head = {id(module.net.head.weight), id(module.net.head.bias)}
    assert {id(p) for p in optimizer.state} == head  # 2 of 17 parameter tensors
    assert sum(len(s) for s in optimizer.state.values()) == 2 * 3  # step, exp_avg, exp_avg_sq per head tensor
    assert sum(p.numel() for p in module.net.parameters()) > 30 * sum(p.numel() for p in module.net.head.parameters())
    assert len(optimizer.param_groups) == len(layer_groups(module.net)) == 6


def plateau_scheduler(optimizer, trainer):
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, threshold=10.0)
    return {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"}


def one_cycle(total_steps: int):
    def build(optimizer, trainer):
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total_steps)
        return {"scheduler": sched, "interval": "step"}

    return build


def test_reduce_lr_on_plateau_keeps_working_through_the_phase_change(freeze_digits):
    """threshold=10 means no epoch counts as an improvement: the plateau scheduler halves after every epoch."""
    L.seed_everything(0)
    module, rec = PlainNet(scheduler=plateau_scheduler), Recorder()
    schedule = FreezeSchedule(
        [{"trainable": "head"}, {"at_epoch": 2, "trainable": "top:3", "lr_scale": LOW}], model_attr="net"
    )
    make_trainer([schedule, rec], max_epochs=4).fit(module, freeze_digits)
    # epoch e starts at LR * 0.5^e, times the phase's scale from the phase change on
    assert rec.rates[1] == pytest.approx(
        {**dict.fromkeys([*FROZEN_AFTER_UNFREEZE, "hidden3", "hidden4"], 0.0), "head": LR * 0.5}
    )
    for epoch in (2, 3):
        assert rec.rates[epoch] == pytest.approx(
            {**dict.fromkeys(FROZEN_AFTER_UNFREEZE, 0.0), **dict.fromkeys(UNFROZEN, LR * 0.5**epoch * LOW)}, rel=1e-12
        )


def test_one_cycle_keeps_its_shape_and_the_phase_rates_after_the_change(freeze_digits):
    L.seed_everything(0)
    steps_per_epoch, epochs = 10, 4
    module, rec = PlainNet(scheduler=one_cycle(steps_per_epoch * epochs)), Recorder()
    schedule = FreezeSchedule(
        [{"trainable": "head"}, {"at_epoch": 2, "trainable": "top:3", "lr_scale": LOW}], model_attr="net"
    )
    make_trainer([schedule, rec], max_epochs=epochs).fit(module, freeze_digits)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR, momentum=0.9)
    cycle = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.1, total_steps=steps_per_epoch * epochs)
    expected = {}
    for step in range(steps_per_epoch * epochs):
        if step % steps_per_epoch == 0:
            expected[step // steps_per_epoch] = reference.param_groups[0]["lr"]
        reference.step()
        cycle.step()
    assert rec.rates[1] == pytest.approx(
        {**dict.fromkeys([*FROZEN_AFTER_UNFREEZE, "hidden3", "hidden4"], 0.0), "head": expected[1]}
    )
    for epoch in (2, 3):
        assert rec.rates[epoch] == pytest.approx(
            {**dict.fromkeys(FROZEN_AFTER_UNFREEZE, 0.0), **dict.fromkeys(UNFROZEN, expected[epoch] * LOW)}, rel=1e-9
        )


def test_plateau_trigger_starts_the_next_phase_after_patience_validations(freeze_digits):
    L.seed_everything(0)
    module, rec = PlainNet(), Recorder()
    # min_delta=10: after the first validation nothing counts as better, so patience 2 fires after epoch 2
    plateau = {"monitor": "val/loss", "mode": "min", "patience": 2, "min_delta": 10.0}
    schedule = FreezeSchedule(
        [{"trainable": "head"}, {"on_plateau": plateau, "trainable": "all", "lr": 0.01}], model_attr="net"
    )
    make_trainer([schedule, rec], max_epochs=4).fit(module, freeze_digits)
    assert [len(rec.trainable[e]) for e in range(4)] == [2, 2, 2, 17]
    assert set(rec.rates[3].values()) == {0.01}
    assert schedule.phase == 1


def test_layer_decay_lowers_the_rate_group_by_group_from_the_top(freeze_digits):
    L.seed_everything(0)
    module, rec = PlainNet(), Recorder()
    schedule = FreezeSchedule([{"trainable": "top:3", "lr": 0.04, "layer_decay": 0.5}], model_attr="net")
    make_trainer([schedule, rec], max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(module, freeze_digits)
    assert rec.rates[0] == pytest.approx(
        {"hidden0": 0, "hidden1": 0, "hidden2": 0, "hidden3": 0.01, "hidden4": 0.02, "head": 0.04}
    )


@pytest.mark.parametrize(
    "phases,message",
    [
        (
            [{"trainable": "head"}, {"at_epoch": 1, "trainable": "top:9"}],
            "K=9 must be between 1 and the number of groups, 6",
        ),
        (
            [{"trainable": "head"}, {"at_epoch": 1, "trainable": ["hidden3", "hiden4"]}],
            "unknown group(s) ['hiden4'] (close: ['hidden4'",
        ),
        ([{"trainable": "head"}, {"at_epoch": 1, "trainable": "top:x"}], "'top:K' needs an integer K"),
    ],
)
def test_invalid_group_specs_fail_before_training_and_list_the_groups(freeze_digits, phases, message):
    module = PlainNet()
    before = params_of(module.net, ["head.weight"])
    with pytest.raises(LtrainError) as err:
        make_trainer([FreezeSchedule(phases, model_attr="net")], max_epochs=1).fit(module, freeze_digits)
    assert message in str(err.value)
    assert all(f" {g} " in str(err.value) for g in ["hidden0", "hidden4", "head"])  # the table of groups
    assert torch.equal(module.net.head.weight, before["head.weight"])  # not one step was taken


@pytest.mark.parametrize(
    "phases,message",
    [
        (
            [{"trainable": "head"}, {"at_epoch": 4, "trainable": "all"}, {"at_epoch": 2, "trainable": "top:2"}],
            "freeze phase epochs must increase: phase 2 starts at epoch 2 (phase starts: [None, 4, 2])",
        ),
        ([{"trainable": "head"}, {"trainable": "all"}], "freeze phase 1 needs at_epoch or on_plateau"),
        ([{"trainable": "head", "at_epoch": 3}], "the first freeze phase starts at epoch 0"),
        ([{"trainable": "head", "lr": 0.1, "lr_scale": 0.1}], "lr (absolute) OR lr_scale"),
        ([{"trainable": "head", "epoch": 3}], "unknown freeze phase keys ['epoch']"),
    ],
)
def test_invalid_phase_lists_fail_when_the_callback_is_built(phases, message):
    with pytest.raises(LtrainError) as err:
        FreezeSchedule(phases)
    assert message in str(err.value)


def test_missing_model_attribute_names_the_modules_children(freeze_digits):
    with pytest.raises(LtrainError, match=r"PlainNet.model.*one of \['net'\]"):
        make_trainer([FreezeSchedule(model_attr="model")], max_epochs=1).fit(PlainNet(), freeze_digits)


class Kill(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("killed")


def resumable_run(tmp_path, freeze_digits, callbacks, ckpt_path=None) -> tuple[PlainNet, L.Trainer, FreezeSchedule]:
    L.seed_everything(0)
    module = PlainNet(optimizer=functools.partial(torch.optim.Adam, lr=1e-2), scheduler=one_cycle(50))
    # phase 1 starts on a plateau (min_delta=10: the 2nd validation already counts as no improvement), so
    # it happens at epoch 2 only if the plateau tracker's state survives; phase 2 starts at epoch 4
    plateau = {"monitor": "val/loss", "patience": 1, "min_delta": 10.0}
    schedule = FreezeSchedule(
        [
            {"trainable": "head"},
            {"on_plateau": plateau, "trainable": "top:3", "lr_scale": LOW},
            {"at_epoch": 4, "trainable": "all", "lr_scale": 0.05, "layer_decay": 0.8},
        ],
        model_attr="net",
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = make_trainer([schedule, checkpoint, *callbacks], max_epochs=5, enable_checkpointing=True)
    trainer.fit(module, freeze_digits, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    return module, trainer, schedule


def test_kill_after_the_phase_change_then_resume_ends_identical_to_an_uninterrupted_run(tmp_path, freeze_digits):
    rec_full = Recorder()
    full, _, _ = resumable_run(tmp_path / "full", freeze_digits, [rec_full])
    with pytest.raises(RuntimeError, match="killed"):
        resumable_run(tmp_path / "killed", freeze_digits, [Kill(epoch=3)])  # in phase 1; last.ckpt = end of epoch 2
    rec = Recorder()
    resumed, trainer, schedule = resumable_run(
        tmp_path / "resumed", freeze_digits, [rec], ckpt_path=tmp_path / "killed" / "last.ckpt"
    )
    assert trainer.global_step == 50 and schedule.phase == 2
    assert [len(rec_full.trainable[e]) for e in range(5)] == [2, 2, 8, 8, 17]
    assert rec.rates[3] == rec_full.rates[3]  # restored phase and rates, before the first resumed step
    assert rec.trainable[3] == rec_full.trainable[3] and rec.bn_modes[3] == rec_full.bn_modes[3]
    assert rec.rates[4] == rec_full.rates[4]  # and through the next phase change
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_timm_model_in_ltrain_classifier_keeps_every_frozen_tensor_and_bn_statistic(freeze_digits):
    """ltrain's ClassifierModule (network at ``.model``) with a timm ResNet: timm's BatchNormAct2d stays frozen."""
    import timm

    from ltrain.modules.classifier import ClassifierModule

    L.seed_everything(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=5, in_chans=1)
    module = ClassifierModule(net, 5, optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    schedule = FreezeSchedule([{"trainable": "head"}, {"at_epoch": 1, "trainable": "top:2", "lr_scale": LOW}])
    make_trainer([schedule], max_epochs=2, limit_train_batches=2, limit_val_batches=1).fit(module, freeze_digits)
    after = net.state_dict()
    frozen = [k for k in before if not k.startswith(("fc.", "layer4."))]
    assert len([k for k in frozen if "running_mean" in k]) == 11  # BN layers below layer4
    assert all(torch.equal(after[k], before[k]) for k in frozen)
    moved = ["fc.weight", "fc.bias", "layer4.0.conv1.weight", "layer4.0.conv2.weight", "layer4.0.bn2.running_mean"]
    assert all(not torch.equal(after[k], before[k]) for k in moved)  # the unfrozen top group and head trained
    assert [g["name"] for g in module.trainer.optimizers[0].param_groups] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "head",
    ]
