"""One file per technique, each read as its recipe: `run(ctx) -> dict` of final metrics.

Each technique registers itself in `registry.TECHNIQUES` at the end of its file: its recipe,
what it needs (`Needs`: model and data kinds, one process only), its headline metrics and
the optional hooks a finished run is read back with (`load_model(cfg, data, ckpt, norm)`
rebuilds the run's model when the configured model alone cannot: a pruned architecture, a
genotype; `evaluate_model(model, data, cfg)` gives pdl-eval the technique's own test
metrics). Importing this package imports them all, so the registry lists every technique:
the `technique` config group names one of its entries, and the tests, scripts/bench.py and
scripts/gpu_check.sh go over the list. A technique's own pre-flight checks (what NEEDS
cannot say) run at the top of its recipe, before any training. Helpers that are not
techniques live beside them: attacks.py, importance.py (pruning criteria), prune_report.py,
nas_baselines.py (random search).
"""

from ..registry import TECHNIQUES

# isort: off  (the registry's order is the course's order of the topics)
from . import adv, attention, bn, gan, nas, prune  # noqa: F401  (each registers itself)

# isort: on


# Overrides that make one run of each technique take seconds on a CPU: the smoke runs of the
# tests, scripts/bench.py and scripts/gpu_check.sh. Every technique has an entry.
QUICK: dict[str, list[str]] = {
    "bn": ["trainer.max_epochs=1"],
    "prune": [
        "trainer.max_epochs=1",
        "prune.finetune_epochs=1",
        "prune.level=filter",
        "prune.latency_repeats=2",
    ],
    "adv": ["trainer.max_epochs=1", "adv.eval_eps=[0.0,0.1]", "adv.pgd_steps=3"],
    "gan": ["trainer.max_epochs=1", "gan.classifier_epochs=2", "gan.n_samples=200"],
    "nas": ["nas.search_epochs=1", "nas.retrain_epochs=1"],
    "attention": ["trainer.max_epochs=1"],
}

__all__ = ["QUICK", "TECHNIQUES"]
