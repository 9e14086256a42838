"""More than one process: launch.py starts, joins and ends a run's processes (it is handed the
function each process runs; it never imports the run), distributed.py is what a rank uses
while it trains (who am I, the agreements, the DDP wrapper of a task's step)."""
