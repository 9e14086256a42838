"""pdl_experiments/techniques/: one test module per technique (and its helpers)."""
