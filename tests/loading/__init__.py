"""pdl_experiments/loading/: finished runs read back, hostile run directories refused."""
