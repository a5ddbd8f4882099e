"""``ltrain groups [overrides]``: print the model's layer groups, bottom -> top, with parameter counts.

The names it prints are what ``freeze.phases[*].trainable`` and ``model.surgery.drop_top`` refer to.
The model is built exactly as ``ltrain`` would build it (same config, same data shape), without training:
    ltrain groups model=timm model.name=resnet18 data.image_size=64 data.channels=3
With ``freeze.groups`` set it prints those explicit groups instead (or refuses them, with the table):
    ltrain groups freeze=default 'freeze.groups={low: [hidden0, hidden1], high: [hidden2, hidden3, hidden4], head: [head]}'
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from ltrain.cli.common import CONFIG_PATH, exit_on_user_error


def describe_groups(cfg: DictConfig) -> str:
    """The layer-group table of the model ``cfg`` builds (sized by the data config, no data loaded)."""
    from ltrain.models import build_model, format_groups
    from ltrain.models.factory import check_model_name
    from ltrain.models.groups import groups_from_patterns

    check_model_name(cfg.model.name)
    shape = (cfg.data.get("channels") or 1, cfg.data.get("image_size") or 28, cfg.data.get("image_size") or 28)
    classes = len(cfg.data.classes) if cfg.data.get("classes") else 10
    model = build_model(cfg.model, num_classes=classes, input_shape=shape)
    spec = (cfg.get("freeze") or {}).get("groups")
    if spec:  # the explicit groups FreezeSchedule would use (refused here exactly as in training)
        groups = groups_from_patterns(model, OmegaConf.to_container(spec, resolve=True))
        return f"{cfg.model.name}: freeze.groups for input {shape}, {classes} classes\n{format_groups(model, groups)}"
    return f"{cfg.model.name}: layer groups for input {shape}, {classes} classes\n{format_groups(model)}"


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    print(describe_groups(cfg))


if __name__ == "__main__":
    main()
