"""The tests, in folders that mirror pdl_experiments/ (and e2e/: pdl-run processes)."""
