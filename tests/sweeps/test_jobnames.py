"""sweeps/jobnames.py: sweep job directories named by what varies."""

from __future__ import annotations


def test_job_names_keep_only_the_swept_keys():
    from omegaconf import OmegaConf

    from pdl_experiments.sweeps.jobnames import job_dirname, swept_keys

    assert swept_keys(
        ["optimizer.lr=0.01,0.1", "trainer.max_epochs=1", "logger=[tensorboard,mlflow]", "seed=range(3)"],
        {"bn.enabled": "true,false", "model": "cnn"},
    ) == ["bn.enabled", "optimizer.lr", "seed"]
    settings = OmegaConf.create({"kv_sep": "=", "item_sep": ",", "exclude_keys": ["trainer.resume"]})
    job = ["trainer.max_epochs=1", "optimizer.lr=0.1", "+seed=2", "trainer.resume=auto"]
    assert (
        job_dirname(job, ["optimizer.lr", "seed", "trainer.resume"], settings) == "+seed=2,optimizer.lr=0.1"
    )
    assert job_dirname(job, None, settings) == "+seed=2,optimizer.lr=0.1,trainer.max_epochs=1"
