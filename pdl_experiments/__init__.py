"""pdl-experiments: the practical ideas of deep learning as config-driven experiments.

`pdl-run` (cli/) is the command line; `load_run(run_dir)` picks up any finished run in
a notebook: model (best weights, eval mode), config, data splits and metrics.
"""

import os as _os

__version__ = "0.1.0"

# An install maps <repo>/configs to the subpackage pdl_experiments.configs (pyproject's
# package-dir). A source checkout used without installing (PYTHONPATH=<repo>, e.g. on a GPU
# box that has torch but nothing to pip-install from) has no such subpackage: let it resolve
# to <repo>/configs there too, so `pkg://pdl_experiments.configs` works either way.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "configs")):
    _repo = _os.path.dirname(_here)
    if _os.path.isfile(_os.path.join(_repo, "configs", "__init__.py")):
        __path__.append(_repo)


def load_run(run_dir, checkpoint: str = "best.pt", device: str = "cpu", trust=None):
    """See pdl_experiments.loading.load_run (imported lazily: this package must import fast)."""
    from . import techniques  # noqa: F401  (fills the registry the run's technique is read from)
    from .loading import load_run as _load_run

    return _load_run(run_dir, checkpoint, device, trust)


__all__ = ["__version__", "load_run"]
