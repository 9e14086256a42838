"""Sweeps: stopping and resuming them (stop.py), job names that say what varies
(jobnames.py), the summary at their end and `pdl-report` (summary.py), statistics over seeds
(seeds.py), and a run that is an Optuna trial (hpo.py; the sweeper itself is the
hydra_plugins/pdl_optuna_sweeper plugin). Cheap to import: Hydra loads the callbacks at
start-up, before any run."""
