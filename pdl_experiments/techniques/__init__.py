"""One file per technique; each defines `run(ctx) -> dict` of final metrics.

The technique group (`technique=prune`) names the module; run.py imports it. Optional
module-level hooks: `prepare_model(model, ckpt, cfg)` rebuilds a checkpoint's architecture
(pruned shapes, dropped blocks) before its weights load, and `evaluate_model(model, data,
cfg)` gives pdl-eval the technique's own test metrics.
"""

TECHNIQUES = ("bn", "prune", "adv", "gan", "nas", "attention")
