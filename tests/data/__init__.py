"""pdl_experiments/data/: the loaders, batches, augmentation."""
