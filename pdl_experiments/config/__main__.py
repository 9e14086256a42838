"""python -m pdl_experiments.config: rewrite configs/base.yaml from RunConfig."""

from .schema import write_base_yaml

print(f"wrote {write_base_yaml()}")
