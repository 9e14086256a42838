"""configs/base.yaml is generated from RunConfig; typing happens at run start."""

from __future__ import annotations

import pytest

from pdl_experiments.config.schema import ConfigError, base_yaml, typed

from helpers import REPO, compose


def test_base_yaml_matches_the_dataclass_schema():
    assert (REPO / "configs" / "base.yaml").read_text() == base_yaml(), (
        "configs/base.yaml is stale: run `python -m pdl_experiments.config`"
    )


def test_typed_converts_and_names_the_key():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        raw = hydra_compose(config_name="config", overrides=["trainer.max_epochs=7", "prune.ratio=0.25"])
    cfg = typed(raw)
    assert cfg.trainer.max_epochs == 7 and isinstance(cfg.trainer.max_epochs, int)
    assert cfg.trainer.device == "auto" and type(cfg.trainer.device).__name__ == "Device"
    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        bad = hydra_compose(config_name="config", overrides=["trainer.batch_size=big"])
    with pytest.raises(ConfigError, match=r"^trainer\.batch_size=big: .*Integer"):
        typed(bad)


@pytest.mark.parametrize(
    "override,match",
    [
        ("bn.impl=fast", r"bn\.impl=fast: Invalid value 'fast'"),
        ("adv.eval_eps=[0.1,x]", r"adv\.eval_eps\[1\]=x: .*Float"),
        ("trainer.amp=maybe", r"trainer\.amp=maybe"),
    ],
)
def test_wrong_types_and_enums_fail_with_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        compose([override])
