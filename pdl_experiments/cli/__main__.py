"""python -m pdl_experiments.cli: pdl-run."""

from . import main

main()
