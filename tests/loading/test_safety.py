"""A run directory made elsewhere is data: hostile ones are refused by every entry point
(load_run, pdl-eval, prune.from_run, pdl-report) and nothing in them runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import textwrap

import pytest
import torch
import yaml

from pdl_experiments.loading import evaluate_run, load_run
from pdl_experiments.loading.safety import UntrustedConfig

from helpers import ENV, PY, pdl_run, run_small


class Payload:
    """Unpickling this creates `marker`: proof that code from the run directory ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("honest")
    metrics, run_dir = run_small(tmp, ["trainer.max_epochs=1", "bn.diagnostics=false", "dataset.subset=300"])
    return metrics, run_dir


def hostile(tmp_path, honest_dir, edit):
    """A copy of an honest run directory whose config `edit(cfg, marker)` changed."""
    run_dir = tmp_path / "shared_run"
    shutil.copytree(honest_dir, run_dir)
    marker = tmp_path / "MARKER"
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    edit(cfg, marker, tmp_path)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return run_dir, marker


def _pickle_file(path, marker):
    with open(path, "wb") as f:
        pickle.dump(Payload(marker), f)
    return str(path)


def numpy_unpickles_the_dataset(cfg, marker, tmp):
    cfg["dataset"] = {
        "_target_": "numpy.load",
        "file": _pickle_file(tmp / "data.npy", marker),
        "allow_pickle": True,
    }


def torch_load_as_the_model(cfg, marker, tmp):
    cfg["model"] = {"_target_": "torch.load", "f": _pickle_file(tmp / "m.pt", marker), "weights_only": False}


def optimizer_that_is_not_one(cfg, marker, tmp):
    cfg["optimizer"] = {"_target_": "pickle.load", "file": _pickle_file(tmp / "o.pkl", marker)}


def optimizer_lookalike(cfg, marker, tmp):
    cfg["optimizer"] = {"_target_": "torch.optim.swa_utils.get_ema_multi_avg_fn", "_partial_": True}


def scheduler_with_a_nested_payload(cfg, marker, tmp):
    cfg["scheduler"] = {
        "_target_": "torch.optim.lr_scheduler.LambdaLR",
        "_partial_": True,
        "lr_lambda": {"_target_": "pickle.load", "file": _pickle_file(tmp / "s.pkl", marker)},
    }


def model_with_a_nested_payload(cfg, marker, tmp):
    cfg["model"]["channels"] = {
        "_target_": "torch.load",
        "f": _pickle_file(tmp / "c.pt", marker),
        "weights_only": False,
    }


def undeclared_argument(cfg, marker, tmp):
    cfg["dataset"]["allow_pickle"] = True  # load_digits takes no such option


def positional_arguments(cfg, marker, tmp):
    cfg["model"]["_args_"] = [_pickle_file(tmp / "a.pt", marker)]


def a_technique_that_is_not_one(cfg, marker, tmp):
    cfg["technique"] = "base"


HOSTILE = [
    numpy_unpickles_the_dataset,
    torch_load_as_the_model,
    optimizer_that_is_not_one,
    optimizer_lookalike,
    scheduler_with_a_nested_payload,
    model_with_a_nested_payload,
    undeclared_argument,
    positional_arguments,
    a_technique_that_is_not_one,
]


def one_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert p.returncode != 0 and len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("edit", HOSTILE, ids=lambda f: f.__name__)
def test_hostile_config_is_refused_by_load_run_and_prune_from_run(tmp_path, honest, edit):
    run_dir, marker = hostile(tmp_path, honest[1], edit)
    with pytest.raises(UntrustedConfig) as refused:
        load_run(run_dir)
    assert "\n" not in str(refused.value) and "refused" in str(refused.value)
    with pytest.raises(UntrustedConfig):
        evaluate_run(run_dir)
    with pytest.raises(UntrustedConfig):
        run_small(
            tmp_path, ["technique=prune", f"prune.from_run={run_dir}", "dataset.subset=300"], name="prune"
        )
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit", [numpy_unpickles_the_dataset, model_with_a_nested_payload], ids=lambda f: f.__name__
)
def test_hostile_config_is_refused_by_the_command_lines(tmp_path, honest, edit):
    run_dir, marker = hostile(tmp_path, honest[1], edit)
    line = one_line(_pdl_eval(tmp_path, run_dir))
    assert line.startswith("pdl-eval: error:") and "_target_=" in line and "refused" in line
    line = one_line(pdl_run(["technique=prune", f"prune.from_run={run_dir}"], tmp_path))
    assert line.startswith("pdl-run: error:") and "_target_=" in line
    assert not marker.exists()


def _pdl_eval(cwd, *args, env=None):
    code = "import sys; from pdl_experiments.cli import eval_main; eval_main(sys.argv[1:])"
    return subprocess.run(
        [PY, "-c", code, *map(str, args)],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_pickled_checkpoint_is_refused_and_runs_nothing(tmp_path, honest):
    run_dir = tmp_path / "shared_run"
    shutil.copytree(honest[1], run_dir)
    marker = tmp_path / "MARKER"
    torch.save({"format": 1, "task": Payload(marker)}, run_dir / "checkpoints" / "best.pt")
    line = one_line(_pdl_eval(tmp_path, run_dir))
    assert "cannot read checkpoint" in line and "refused" in line
    with pytest.raises(Exception, match="cannot read checkpoint"):
        load_run(run_dir)
    assert not marker.exists()


@pytest.mark.parametrize("what", ["big_config", "alias_bomb", "big_metrics", "big_overrides"])
def test_oversized_or_exploding_files_are_refused(tmp_path, honest, what):
    run_dir = tmp_path / "shared_run"
    shutil.copytree(honest[1], run_dir)
    hydra_dir = run_dir / ".hydra"
    if what == "big_config":
        (hydra_dir / "config.yaml").write_text(
            (hydra_dir / "config.yaml").read_text() + "pad: " + "x" * (2 << 20)
        )
    elif what == "alias_bomb":
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        (hydra_dir / "config.yaml").write_text((hydra_dir / "config.yaml").read_text() + bomb)
    elif what == "big_metrics":
        (run_dir / "metrics.json").write_text(json.dumps({f"k{i}": float(i) for i in range(600_000)}))
    else:
        (hydra_dir / "overrides.yaml").write_text("- " + "x" * (2 << 20) + "\n")
    if what in ("big_config", "alias_bomb", "big_metrics"):
        with pytest.raises(UntrustedConfig, match="refused"):
            load_run(run_dir)
    from pdl_experiments.sweeps.summary import report

    if what in ("big_metrics", "big_overrides"):
        with pytest.raises(UntrustedConfig, match="refused"):
            report([run_dir])


def test_honest_run_loads_exactly_as_before(honest):
    metrics, run_dir = honest
    again = evaluate_run(run_dir)
    assert again["test/acc"] == metrics["test/acc"]
    assert load_run(run_dir).metrics == json.loads((run_dir / "metrics.json").read_text())


PLUGIN = """
    from torch import nn

    from pdl_experiments.models.common import classifier_head, conv_bn_relu, image_input


    class TinyNet(nn.Module):
        def __init__(self, info, norm, channels=(16,), hidden=32, dropout=0.0):
            super().__init__()
            self.normalize, c, _ = image_input(info)
            self.features = nn.Sequential(*[conv_bn_relu(c if i == 0 else channels[i - 1], w, norm)
                                            for i, w in enumerate(channels)])
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = classifier_head(channels[-1], hidden, info.num_classes, dropout)

        def forward(self, x):
            return self.classifier(self.pool(self.features(self.normalize(x))))
"""


def test_a_user_model_loads_after_one_act_of_trust_and_not_before(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins" / "mylab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    # The user's own command line may name any target: the run itself is not limited.
    metrics, run_dir = run_small(
        tmp_path,
        [
            "trainer.max_epochs=1",
            "bn.diagnostics=false",
            "dataset.subset=300",
            "model._target_=mylab.nets.TinyNet",
            "model.channels=[16]",
        ],
    )
    with pytest.raises(UntrustedConfig, match="PDL_TRUSTED_TARGETS=mylab"):
        load_run(run_dir)
    assert load_run(run_dir, trust=["mylab."]).metrics["test/acc"] == metrics["test/acc"]
    monkeypatch.setenv("PDL_TRUSTED_TARGETS", "mylab.nets")
    assert evaluate_run(run_dir)["test/acc"] == metrics["test/acc"]
    monkeypatch.delenv("PDL_TRUSTED_TARGETS")

    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), ENV.get("PYTHONPATH", "")])}
    assert "PDL_TRUSTED_TARGETS" in one_line(_pdl_eval(tmp_path, run_dir, env=env))
    trusted = _pdl_eval(tmp_path, run_dir, "--trust", "mylab.", env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout.strip().splitlines()[-1])["test/acc"] == metrics["test/acc"]
