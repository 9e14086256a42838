"""sweeps/seeds.py: statistics over seeds. A real seed sweep summarised per setting:
e2e/test_sweeps.py."""
