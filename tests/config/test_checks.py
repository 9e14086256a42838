"""config/checks.py: every combination runs or says why; every option is checked before any
work starts.

The matrix is every technique x every model option x the two kinds of bundled data
(digits, reverse): each composed as `pdl-run technique=<t> model=<m> dataset=<d>` would
(Hydra's runtime config set, so choices on the command line are known), then run for one
tiny epoch. A refusal must be our own one-line ConfigError naming the configuration; an
exception from inside torch or a wrapped internal error fails the test.
"""

from __future__ import annotations

import math

import pytest

from pdl_experiments.config import ConfigError, typed
from pdl_experiments.config.ranges import validate
from pdl_experiments.techniques import QUICK, TECHNIQUES

from helpers import REPO, as_pdl_run, bad_values

MODELS = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))
DATASETS = ["digits", "reverse"]
SMALL_DATA = {
    "digits": ["dataset.subset=300"],
    "reverse": ["dataset.length=8", "dataset.n_train=300", "dataset.n_val=50", "dataset.n_test=50"],
}
MATRIX = [(t, m, d) for t in TECHNIQUES for m in MODELS for d in DATASETS]


def _run(tmp_path, overrides):
    from pdl_experiments.run import run

    with as_pdl_run(overrides) as cfg:
        return run(cfg, tmp_path / "run")


@pytest.mark.parametrize("technique,model,dataset", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_every_combination_runs_or_refuses_in_one_line(tmp_path, technique, model, dataset):
    overrides = [
        f"technique={technique}",
        f"model={model}",
        f"dataset={dataset}",
        "trainer.progress=none",
        "trainer.num_threads=1",
        f"gan.cache_dir={tmp_path / 'cache'}",
        *QUICK[technique],
        *SMALL_DATA[dataset],
    ]
    try:
        metrics = _run(tmp_path, overrides)
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message
        assert any(
            s in message
            for s in (
                f"technique={technique}",
                f"model={model}",
                f"dataset={dataset}",
                "model.",
                "dataset.",
                f"{technique}.",
            )
        ), message
        assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training
        return
    assert all(math.isfinite(v) for v in metrics.values())


def test_the_combinations_that_make_sense_run(tmp_path):
    """What the matrix must not refuse: image classifiers with the image techniques, the GAN
    models with gan, sequence models with attention, nas with its own network."""
    for overrides in (
        ["technique=prune", "model=resnet"],
        ["technique=adv", "model=vgg"],
        ["technique=gan", "model=dcgan"],
        ["technique=attention", "model=transformer"],
        ["technique=nas"],
    ):
        t = overrides[0].split("=")[1]
        data = SMALL_DATA["reverse" if t == "attention" else "digits"]
        metrics = _run(
            tmp_path / t,
            [
                *overrides,
                "trainer.progress=none",
                "trainer.num_threads=1",
                *QUICK[t],
                *data,
                f"gan.cache_dir={tmp_path / 'cache'}",
            ],
        )
        # What each kind of run is judged by: accuracy, token accuracy, a GAN's FID.
        key = {"attention": "test/token_acc", "gan": "gan/fid"}.get(t, "test/acc")
        value = metrics.get(key)
        assert value is not None and math.isfinite(value) and (key == "gan/fid" or 0.0 <= value <= 1.0), (
            t,
            metrics,
        )
        assert (tmp_path / t / "run" / "metrics.json").is_file()


OPTIMIZERS = sorted(p.stem for p in (REPO / "configs" / "optimizer").glob("*.yaml"))
SCHEDULERS = ["cosine", "step"]
# Options of the optimizer and scheduler groups their shipped configs do not set (added with +).
UNSET_OPTIONS = [
    ("optimizer", "adam", "betas", [0.9, 0.999]),
    ("optimizer", "adam", "eps", 1e-8),
    ("scheduler", "cosine", "T_max", 10),  # set, as ${trainer.max_epochs}: no + needed
    ("scheduler", "cosine", "eta_min", 0.0),
]


def _numeric_options():
    import yaml

    for group, names in (
        ("model", MODELS),
        ("dataset", DATASETS + ["copy", "sort", "synthetic"]),
        ("optimizer", OPTIMIZERS),
        ("scheduler", SCHEDULERS),
    ):
        for name in names:
            data = yaml.safe_load((REPO / "configs" / group / f"{name}.yaml").read_text())
            for key, value in data.items():
                if key.startswith("_") or key == "seed" or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)) or (
                    isinstance(value, list) and value and all(isinstance(x, int) for x in value)
                ):
                    yield group, name, key, value


OPTION_CASES = list(_numeric_options()) + UNSET_OPTIONS


@pytest.mark.parametrize(
    "group,name,key,value", OPTION_CASES, ids=[f"{g}={n}-{k}" for g, n, k, _ in OPTION_CASES]
)
def test_every_numeric_option_of_a_target_group_refuses_bad_values(group, name, key, value):
    """model, dataset, optimizer and scheduler options alike: signature, type and range."""
    from pdl_experiments.config import checks as compat

    technique = (
        "attention"
        if name in ("seq2seq", "seq2seq_attention", "transformer", "reverse", "copy", "sort")
        else "gan"
        if name in ("gan_mlp", "dcgan")
        else "bn"
    )
    from pdl_experiments.config.ranges import _OPTION_RANGES

    bads = bad_values(_OPTION_RANGES[key][0]) if key in _OPTION_RANGES else [0]
    plus = "+" if (group, name, key, value) in UNSET_OPTIONS and key != "T_max" else ""
    for bad in bads:
        override = f"{plus}{group}.{key}={bad}".replace(" ", "")
        with as_pdl_run([f"technique={technique}", f"{group}={name}", override]) as cfg:
            with pytest.raises(ConfigError, match=rf"{group}\.{key}"):
                cfg = typed(cfg)
                validate(cfg)
                compat.check_options(cfg[group], group)


def test_a_wrong_type_names_the_key():
    from pdl_experiments.config import checks as compat

    with as_pdl_run(["model=mlp", "model.hidden=abc"]) as cfg:
        with pytest.raises(ConfigError, match=r"model\.hidden=abc"):
            cfg = typed(cfg)
            validate(cfg)
            compat.check_options(cfg.model, "model")


def test_an_unknown_optimizer_or_scheduler_option_is_named_with_the_allowed_ones():
    from pdl_experiments.config import checks as compat

    for group, name, bad, allowed in (
        ("optimizer", "sgd", "momentm", "lr, momentum, dampening, weight_decay, nesterov"),
        ("scheduler", "step", "stepsize", "step_size, gamma"),
    ):
        with as_pdl_run([f"{group}={name}", f"+{group}.{bad}=1"]) as cfg:
            with pytest.raises(ConfigError) as e:
                cfg = typed(cfg)
                validate(cfg)
                compat.check_options(cfg[group], group)
        message = str(e.value)
        assert message.startswith(f"{group}.{bad} is not an option of ") and allowed in message, message
        assert (
            "params" not in message.split("expected one of", 1)[1].split(", ")[:1]
        )  # passed in, not an option
