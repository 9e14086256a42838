"""pdl_experiments/config/: schema, ranges, what goes with what."""
