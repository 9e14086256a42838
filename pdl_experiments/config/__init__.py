"""Configuration and pre-flight checks: the bottom layer, it imports nothing above it.

* schema.py: the typed schema (`RunConfig`), `typed(cfg)` and `ConfigError`;
  `configs/base.yaml` is generated from it (`python -m pdl_experiments.config`).
* ranges.py: the ranges a type cannot express, by key, and the options of `_target_` groups
  (model, dataset, optimizer, scheduler) by name.
* checks.py: what goes with what (technique x model x dataset, from the registries) and a
  `_target_` group's options against the signature of what it names.

Cheap to import (no torch): `pdl-run --help` and `--cfg job` import it.
"""

from .schema import ConfigError, RunConfig, typed

__all__ = ["ConfigError", "RunConfig", "typed"]
