"""technique=prune: real (tiny) training, pruning, fine-tuning, checkpoints and resumes. The
criteria: test_importance.py; the masks' bits: models/test_sparse.py."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch
from torch import nn

from helpers import run_small

# Small and quick: 200 training images (4 batches), 1 + 2 epochs, one latency repeat, and
# one thread (two threads on a busy 2-core machine mostly spin).
FAST = [
    "dataset.subset=200",
    "trainer.max_epochs=1",
    "prune.finetune_epochs=2",
    "prune.latency_repeats=1",
    "trainer.num_threads=1",
]
LEVELS = {
    "weight": ["prune.level=weight", "prune.ratio=0.9"],
    "filter": ["prune.level=filter", "prune.ratio=0.5"],
    "layer": ["prune.level=layer", "model=resnet", "prune.blocks=1", "model.width=8"],
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One uninterrupted run per level, made on first use and shared by the tests below."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("clean")

    def get(level: str):
        if level not in cache:
            cache[level] = run_small(root, ["technique=prune", *FAST, *LEVELS[level]], level)
        return cache[level]

    return get


def _weights(model: nn.Module):
    return [(n, m.weight) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_weight_level_masks_hold_and_checkpoint_is_compact(clean):
    from pdl_experiments import load_run

    metrics, run_dir = clean("weight")
    assert metrics["prune/acc_finetuned"] == metrics["test/acc"]
    assert metrics["prune/sparsity"] >= 0.9  # after fine-tuning: the masks held
    best = run_dir / "checkpoints" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    assert not any(k.endswith(("_orig", "_mask")) for k in ckpt["task"])
    assert any(k.endswith("weight_bits") for k in ckpt["task"])
    assert best.stat().st_size <= metrics["prune/ckpt_bytes_before"] / 4
    assert metrics["prune/ckpt_bytes_after"] == best.stat().st_size

    loaded = load_run(run_dir)  # a plain model: masks folded in, zeros in place
    weights = _weights(loaded.model)
    assert not any(hasattr(m, "weight_mask") for m in loaded.model.modules())
    zeros = sum(int((w == 0).sum()) for _, w in weights)
    assert zeros / sum(w.numel() for _, w in weights) >= 0.9
    for name, w in weights:
        assert float((w == 0).float().mean()) == pytest.approx(metrics[f"prune/sparsity/{name}"], abs=1e-6)
    from pdl_experiments.loading import evaluate_run

    assert evaluate_run(run_dir)["test/acc"] == pytest.approx(metrics["test/acc"])


@pytest.mark.parametrize("model,criterion", [("cnn", "l1"), ("vgg", "activation"), ("resnet", "similarity")])
def test_filter_level_removes_channels_and_reloads(tmp_path, model, criterion):
    from pdl_experiments import load_run
    from pdl_experiments.models import BatchNormSpec, build_model, count_params

    extra = ["model.width=8"] if model == "resnet" else []
    extra += ["model.layout=[16,16,M,32,32,M]"] if model == "vgg" else []
    metrics, run_dir = run_small(
        tmp_path,
        [
            "technique=prune",
            *FAST,
            "prune.finetune_epochs=1",
            "prune.level=filter",
            f"prune.criterion={criterion}",
            f"model={model}",
            *extra,
        ],
    )
    assert metrics["prune/conv_params_share"] <= 0.35
    assert metrics["prune/flops_share"] <= 0.35
    assert metrics["prune/params_after"] < 0.4 * metrics["prune/params_before"]
    loaded = load_run(run_dir)  # rebuilt from the checkpoint's tensor shapes
    assert count_params(loaded.model) == metrics["prune/params_after"]
    dense = build_model(loaded.cfg.model, loaded.data.info, BatchNormSpec())
    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs(loaded.model)] == [c.out_channels // 2 for c in convs(dense)]
    from pdl_experiments.loading import evaluate_run

    assert evaluate_run(run_dir)["test/acc"] == pytest.approx(metrics["test/acc"])


def test_layer_level_drops_a_block_and_beats_random(clean):
    from pdl_experiments import load_run

    metrics, run_dir = clean("layer")
    assert metrics["prune/blocks_removed"] == 1
    loaded = load_run(run_dir)
    identities = [i for i, b in enumerate(loaded.model.blocks) if isinstance(b, nn.Identity)]
    assert len(identities) == 1
    scores = {
        int(k.rsplit("/", 1)[1]): v
        for k, v in metrics.items()
        if k.startswith("prune/val_acc_without_block/")
    }
    assert set(scores) == {0, 1, 3, 5}  # the blocks with an identity shortcut
    assert scores[identities[0]] == max(scores.values())  # the criterion's choice
    assert "prune/acc_random_block" in metrics
    from pdl_experiments.loading import evaluate_run

    assert evaluate_run(run_dir)["test/acc"] == pytest.approx(metrics["test/acc"])


class _KillWhenPruned:
    """Sends this process SIGTERM a few batches into fine-tuning (a global forward hook).

    Fine-tuning is recognised by the model training while pruned: masks attached, fewer
    parameters than in its first training step, or a block replaced by the identity.
    """

    def __init__(self, after_batches: int):
        self.after = after_batches
        self.dense_params = None
        self.seen = 0

    def __call__(self, module, inputs, output):
        if not module.training or type(module).__name__ not in ("SmallCNN", "ResNet"):
            return
        params = sum(p.numel() for p in module.parameters())
        self.dense_params = self.dense_params or params
        pruned = (
            params < self.dense_params
            or any(hasattr(m, "weight_mask") for m in module.modules())
            or any(isinstance(b, nn.Identity) for b in getattr(module, "blocks", []))
        )
        if pruned:
            self.seen += 1
            if self.seen == self.after:
                os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("level", ["weight", "filter", "layer"])
def test_resume_in_finetune_phase_matches_uninterrupted(tmp_path, clean, level):
    from pdl_experiments.training import Interrupted

    expected, _ = clean(level)
    overrides = ["technique=prune", *FAST, *LEVELS[level]]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    kill = _KillWhenPruned(after_batches=6)  # 4 batches an epoch: fine-tune epoch 2, batch 2
    hook = torch.nn.modules.module.register_module_forward_hook(kill)
    try:
        with pytest.raises(Interrupted):
            run_small(tmp_path, overrides, "killed")
    finally:
        hook.remove()
        for s, h in handlers.items():
            signal.signal(s, h)
    ckpt = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["phase"] == "finetune" and not ckpt["phase_complete"]

    got, _ = run_small(tmp_path, [*overrides, f"trainer.resume={tmp_path / 'killed'}"], "resumed")
    for key in (
        "test/acc",
        "prune/acc_before",
        "prune/acc_pruned",
        "prune/nonzero_after",
        "prune/params_after",
    ):
        assert got[key] == expected[key], key
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-5)


def test_iterations_and_from_run(tmp_path):
    source, source_dir = run_small(
        tmp_path,
        [
            "technique=bn",
            "bn.diagnostics=false",
            "dataset.subset=200",
            "trainer.max_epochs=1",
            "trainer.num_threads=1",
        ],
        "source",
    )
    metrics, run_dir = run_small(
        tmp_path,
        [
            "technique=prune",
            *FAST,
            f"prune.from_run={source_dir}",
            "prune.level=weight",
            "prune.ratio=0.75",
            "prune.iterations=2",
            "prune.finetune_epochs=1",
        ],
        "pruned",
    )
    assert metrics["prune/acc_before"] == source["test/acc"]  # no training of its own
    assert metrics["prune/ckpt_bytes_before"] == (source_dir / "checkpoints" / "best.pt").stat().st_size
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    # The dense model came from the source run: the train phase only measured it.
    assert ckpt["phases_done"] == ["train", "finetune1"] and ckpt["phase"] == "finetune2"
    # Two rounds of 50% of what is left: 75% in all.
    assert metrics["prune/sparsity"] == pytest.approx(0.75, abs=0.01)
    assert "prune/acc_pruned_round1" in metrics and "prune/acc_pruned_round2" in metrics
    # Each round's accuracy after its fine-tuning; the last one is the run's.
    assert 0 < metrics["prune/acc_finetuned_round1"] <= 1
    assert metrics["prune/acc_finetuned_round2"] == metrics["test/acc"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["prune.level=layer"], "model=resnet"),
        (["prune.level=layer", "model=resnet", "prune.blocks=5"], "prune.blocks=5"),
        (["prune.level=weight", "prune.criterion=activation"], "prune.criterion=activation"),
        (["prune.level=filter", "prune.ratio=0.99"], "prune.ratio=0.99"),
        (["prune.ratio=1.0"], "prune.ratio=1.0"),
        (["prune.latency_repeats=0"], "prune.latency_repeats=0"),
        (["prune.from_run=/nonexistent/run"], "prune.from_run=/nonexistent/run"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, overrides, message):
    from pdl_experiments.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        run_small(tmp_path, ["technique=prune", *overrides])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_from_run_must_match_the_model(tmp_path, clean):
    from pdl_experiments.config import ConfigError

    _, run_dir = clean("weight")
    with pytest.raises(ConfigError, match="model"):
        run_small(tmp_path, ["technique=prune", "model=vgg", f"prune.from_run={run_dir}"])


def test_sweep_preset_composes_with_each_of_its_settings():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from helpers import compose

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        raw = hydra_compose(
            config_name="config", overrides=["experiment=prune_sweep"], return_hydra_config=True
        )
    settings = str(raw.hydra.sweeper.params["+prune_setting"]).split(",")
    assert len(settings) == 7
    for setting in settings:
        cfg = compose(["experiment=prune_sweep", f"+prune_setting={setting}"])
        assert cfg.technique == "prune" and not cfg.bn.enabled
        assert (
            cfg.model._target_.rsplit(".", 1)[-1]
            == {"cnn": "SmallCNN", "mlp": "MLP", "resnet": "ResNet"}[setting.split("_")[0]]
        )


def test_layer_level_by_discriminability_with_a_fine_tuned_random_baseline(tmp_path):
    metrics, _ = run_small(
        tmp_path,
        [
            "technique=prune",
            *FAST,
            *LEVELS["layer"],
            "prune.criterion=discriminability",
            "prune.random_baselines=2",
        ],
    )
    fisher = {k: v for k, v in metrics.items() if k.startswith("prune/fisher_without_block/")}
    assert len(fisher) == 4 and all(v > 0 for v in fisher.values())
    draws = [metrics["prune/acc_random_finetuned/1"], metrics["prune/acc_random_finetuned/2"]]
    assert metrics["prune/acc_random_finetuned"] == pytest.approx(sum(draws) / 2)
    assert metrics["prune/blocks_removed"] == 1


def test_a_criterion_of_another_level_is_refused_at_the_layer_level(tmp_path):
    from pdl_experiments.config import ConfigError

    with pytest.raises(ConfigError, match="prune.criterion=similarity does not apply to prune.level=layer"):
        run_small(tmp_path, ["technique=prune", *FAST, *LEVELS["layer"], "prune.criterion=similarity"])


def test_the_levels_of_the_preset_prune_the_same_share_of_the_resnet():
    """resnet_weight zeroes the share of the ResNet's weights that resnet_layer removes."""
    from pdl_experiments.data import DataInfo
    from pdl_experiments.models import BatchNormSpec, build_model
    from pdl_experiments.models.common import removable_blocks, weight_layers

    from helpers import compose

    layer = compose(["experiment=prune_sweep", "+prune_setting=resnet_layer"])
    weight = compose(["experiment=prune_sweep", "+prune_setting=resnet_weight"])
    info = DataInfo("digits", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,))
    model = build_model(layer.model, info, BatchNormSpec(enabled=False))
    total = sum(m.weight.numel() for _, m in weight_layers(model))
    assert len(removable_blocks(model)) == layer.prune.blocks  # every removable block goes
    for i in removable_blocks(model):
        model.blocks[i] = nn.Identity()
    removed = 1 - sum(m.weight.numel() for _, m in weight_layers(model)) / total
    assert weight.prune.ratio == pytest.approx(removed, abs=5e-4)


def test_random_filter_criterion_is_seeded_and_apart_from_the_global_generator():
    import torch_pruning as tp

    from pdl_experiments.techniques.importance import filter_criteria

    def kept(seed: int) -> list[int]:
        torch.manual_seed(0)
        conv, head = torch.nn.Conv2d(1, 8, 1), torch.nn.Conv2d(8, 2, 1)
        model = torch.nn.Sequential(conv, head)
        original = conv.weight.detach().clone()
        importance = filter_criteria(seed=seed)["random"](model, [])
        x = torch.rand(1, 1, 2, 2)
        state = torch.random.get_rng_state()
        pruner = tp.pruner.BasePruner(
            model, x, importance=importance, pruning_ratio_dict={conv: 0.5}, ignored_layers=[head]
        )
        pruner.step()
        assert torch.equal(torch.random.get_rng_state(), state)  # the run's own stream is untouched
        return [int((original == w).all(dim=(1, 2, 3)).nonzero()) for w in conv.weight.detach()]

    first = kept(1)
    assert len(first) == 4 and kept(1) == first  # the same filters for a seed
    assert any(kept(s) != first for s in (2, 3, 4))
