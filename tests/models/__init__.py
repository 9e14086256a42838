"""pdl_experiments/models/: the zoo and its layers."""
