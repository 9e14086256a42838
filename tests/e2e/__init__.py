"""End to end: tests that start pdl-run (or pdl-eval, torchrun, a Hydra app) processes, marked e2e."""
