"""The sphere function, the example app of Hydra's Optuna sweeper tests
(tests/e2e/test_optuna_sweeper.py).

python sphere.py -m hydra.sweep.dir=... [x=choice(0,1,2) y=0] [error=true]
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    x: float = cfg.x
    y: float = cfg.y
    return x**2 + y**2


if __name__ == "__main__":
    sphere()
