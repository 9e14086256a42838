"""Hostile run directories refused by the command lines (pdl-eval, pdl-run prune.from_run),
and a user's own model trusted by one act (PDL_TRUSTED_TARGETS, --trust). In-process:
loading/test_safety.py; the `honest` run is conftest's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest
import torch

from pdl_experiments.loading import evaluate_run, load_run
from pdl_experiments.loading.safety import UntrustedConfig

from helpers import (
    ENV,
    PY,
    Payload,
    hostile,
    model_with_a_nested_payload,
    numpy_unpickles_the_dataset,
    pdl_run,
    run_small,
)

pytestmark = pytest.mark.e2e


def one_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert p.returncode != 0 and len(lines) == 1, p.stderr
    return lines[0]


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
