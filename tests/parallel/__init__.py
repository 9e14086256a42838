"""pdl_experiments/parallel/: what a rank uses, starting N processes (pure pieces)."""
