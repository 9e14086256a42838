"""pdl-run --help and --cfg job (cli/__init__.py): the help page, quiet into a closed pipe, and
neither imports torch (a fresh process each: what sys.modules holds is the point)."""

from __future__ import annotations

import subprocess

import pytest

from pdl_experiments.techniques import TECHNIQUES

from helpers import ENV, PY

pytestmark = pytest.mark.e2e


def test_cfg_job_imports_no_torch(tmp_path):
    code = (
        "import sys; sys.argv = ['pdl-run', '--cfg', 'job'];\n"
        "from pdl_experiments import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('NO_TORCH')"
    )
    p = subprocess.run([PY, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=60)
    assert "NO_TORCH" in p.stdout, p.stderr
    assert "technique: bn" in p.stdout


def test_help_page_introduces_pdl_run_and_every_technique(tmp_path):
    code = (
        "import sys; sys.argv = ['pdl-run', '--help']\n"
        "from pdl_experiments import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    p = subprocess.run([PY, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert text.startswith("pdl-run: ") and "powered by Hydra" not in text
    for name in TECHNIQUES:
        assert f"\n  {name} " in text, name  # one line each
    for group in ("model:", "dataset:", "technique:", "logger:", "== Examples ==", "outputs/multirun/"):
        assert group in text


@pytest.mark.parametrize("reader", ["head -1", "head -c 0"])  # head -c 0: closed before any write
def test_help_into_a_closed_pipe_is_quiet(tmp_path, reader):
    cmd = f"set +o pipefail; '{PY}' -m pdl_experiments.cli --help | {reader}"
    p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout == (
        "pdl-run: one command line for deep-learning experiments. It composes a model,\n"
        if reader == "head -1"
        else ""
    )
