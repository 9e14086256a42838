"""One file per technique, each read as its recipe: `run(ctx) -> dict` of final metrics.

`TECHNIQUES` is the registry: the `technique` config group names one of its entries, run.py
imports `pdl_experiments.techniques.<name>`, and the tests, scripts/bench.py and
scripts/gpu_check.sh go over the list. Every technique module defines:

* `run(ctx)`: the recipe, phase by phase, through the RunContext (context.py);
* `check(ctx)`: the pre-flight check, raising ConfigError before any training.

Optional module-level hooks used when a finished run is read back (loading.py):
`load_model(cfg, data, ckpt, norm)` rebuilds the run's model from a checkpoint when the
configured model alone cannot (a pruned architecture, a genotype), and
`evaluate_model(model, data, cfg)` gives pdl-eval the technique's own test metrics.
Helpers that are not techniques live beside them: base.py (Task), attacks.py,
importance.py (pruning criteria), prune_report.py, nas_baselines.py (random search).
"""

TECHNIQUES = ("bn", "prune", "adv", "gan", "nas", "attention")

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
