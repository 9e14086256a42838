"""config/schema.py: configs/base.yaml is generated from RunConfig; typing happens at run start;
every option of every config group composes onto the schema, bad overrides fail there."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from pdl_experiments.config.schema import ConfigError, base_yaml, typed
from pdl_experiments.techniques import TECHNIQUES

from helpers import REPO, compose

CONFIGS = REPO / "configs"


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


def group_options():
    for group in (
        "model",
        "dataset",
        "augmentation",
        "optimizer",
        "scheduler",
        "trainer",
        "technique",
        "experiment",
    ):
        for f in sorted((CONFIGS / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg.technique in TECHNIQUES
    assert cfg.trainer.max_epochs >= 1


def test_technique_options_live_under_their_own_key():
    cfg = compose(["technique=prune", "prune.level=filter"])
    assert cfg.technique == "prune" and cfg.prune.level == "filter"


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("trainer.max_epochs=abc", ConfigError),  # the schema's type check (config.typed)
        ("trainer.nosuch=1", ConfigCompositionException),  # Hydra: no such key to override
        ("model=nosuch", ConfigCompositionException),  # Hydra: no such config group option
        ("trainer.device=tpu", ConfigError),  # the schema's enum check
    ],
)
def test_bad_overrides_fail_at_composition(override, error):
    with pytest.raises(error):
        compose([override])
