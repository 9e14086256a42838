"""technique=nas (DARTS): the second-order gradient and the virtual step, the real run
(search -> derive -> retrain) on a small digits budget, the random baseline, load_run and
resume across phases. The search space itself: models/test_darts.py."""

from __future__ import annotations

import json

import pytest
import torch

from pdl_experiments.config import ConfigError
from pdl_experiments.data import DataInfo
from pdl_experiments.models import count_params
from pdl_experiments.models.darts import (
    DerivedNetwork,
    SearchNetwork,
    random_genotype,
    skip_count,
)
from pdl_experiments.models.norm import BatchNormSpec
from pdl_experiments.training import load_checkpoint

from helpers import compose, run_small

# A small budget: 300 training images (2 x 150 in the search), 8 channels, 2 cells of 2
# nodes, 2 search and 3 retrain epochs (a few seconds of CPU a run).
SMALL = [
    "technique=nas",
    "dataset.subset=300",
    "nas.channels=8",
    "nas.nodes=2",
    "nas.search_epochs=2",
    "nas.retrain_epochs=3",
    "nas.arch_lr=0.05",
    "optimizer.lr=0.01",
    "trainer.num_threads=1",
]
DEFAULT_OPS = ["conv_3x3", "conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: one thread is as fast, and a busy CPU makes two spin (several x the CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _info(shape):
    return DataInfo("t", in_shape=shape, num_classes=10, mean=(0.5,) * shape[0], std=(0.25,) * shape[0])


def test_second_order_gradient_matches_the_exact_unrolled_gradient():
    """The finite-difference step equals d/dalpha L_val(w - xi dL_train/dw, alpha)."""
    from torch.func import functional_call

    from pdl_experiments.techniques.nas import SearchTask

    torch.manual_seed(0)
    net = SearchNetwork(
        _info((1, 8, 8)),
        BatchNormSpec(),
        ["conv_3x3", "avg_pool_3x3", "skip_connect", "none"],
        nodes=2,
        cells=1,
        channels=3,
    ).double()
    with torch.no_grad():
        net.alpha.normal_()
    task = SearchTask(net, arch_lr=0.1, second_order=True)
    # A small step in float64, so the difference quotient crosses (almost) no ReLU kink.
    task.fd_scale = 1e-6
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    batch = (x[:8], y[:8], x[8:], y[8:])
    xi = 0.5
    opt = torch.optim.SGD(net.weight_parameters(), lr=xi)
    before = [p.detach().clone() for p in net.parameters()]
    approx, _ = task.unrolled_alpha_grad(batch, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # w restored

    names = [n for n, _ in net.named_parameters() if n != "alpha"]
    w = net.weight_parameters()
    loss = task.loss(batch[0], batch[1])
    grads = torch.autograd.grad(loss, w, create_graph=True)
    unrolled = {n: p - xi * g for n, p, g in zip(names, w, grads, strict=True)}
    val = torch.nn.functional.cross_entropy(functional_call(net, unrolled, (batch[2],)), batch[3])
    exact = torch.autograd.grad(val, net.alpha)[0]
    assert torch.allclose(approx, exact, rtol=1e-3, atol=1e-6)
    first_order = torch.autograd.grad(task.loss(batch[2], batch[3]), net.alpha)[0]
    assert not torch.allclose(exact, first_order, rtol=1e-3)  # the second-order term counts


@pytest.mark.parametrize("kind", ["momentum", "nesterov", "adam"])
def test_the_virtual_step_is_the_weight_optimizers_next_step(kind):
    """DARTS' w' = w - xi * d follows the weight optimizer: for SGD, d is exactly the step
    opt.step() takes next (momentum buffer and weight decay included)."""
    from pdl_experiments.techniques.nas import optimizer_direction

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    params = list(net.parameters())
    if kind == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=0.1, weight_decay=0.01)
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=kind == "nesterov")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(2):  # a momentum buffer to follow
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), params)
    d = optimizer_direction(opt, params, grads)
    if kind == "adam":
        expected = [g + 0.01 * p for g, p in zip(grads, params, strict=True)]
    else:
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        expected = [(b - p.detach()) / 0.1 for b, p in zip(before, params, strict=True)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(d, expected, strict=True))


# -- the technique, end to end -----------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    return run_small(tmp_path_factory.mktemp("nas"), SMALL, name="full")


def _scalar_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_search_derive_retrain(searched):
    metrics, run_dir = searched
    for key in (
        "test/acc",
        "val/acc",
        "params",
        "nas/skip_count",
        "nas/alpha_entropy_start",
        "nas/alpha_entropy_end",
        "nas/search_time_s",
        "nas/retrain_time_s",
    ):
        assert key in metrics, key
    assert metrics["test/acc"] > 0.3
    assert metrics["nas/alpha_entropy_end"] < metrics["nas/alpha_entropy_start"]
    assert metrics["nas/alpha_entropy_start"] == pytest.approx(torch.log(torch.tensor(7.0)).item(), abs=1e-3)

    saved = json.loads((run_dir / "genotype.json").read_text())
    assert saved["source"] == "search" and len(saved["genotype"]) == 2
    assert all(len(node) == 2 for node in saved["genotype"])
    assert saved["skip_count"] == metrics["nas/skip_count"] == skip_count(saved["genotype"])
    assert (run_dir / "alpha.png").is_file()

    ckpt = load_checkpoint(run_dir, "best.pt")  # weights_only=True
    assert ckpt["phase"] == "retrain"
    assert ckpt["extra"]["phases"]["search"]["genotype"] == saved["genotype"]
    derived = DerivedNetwork(_info((1, 8, 8)), BatchNormSpec(), saved["genotype"], 2, 8)
    assert metrics["params"] == count_params(derived)

    acc = _scalar_tags(run_dir)
    tags = acc.Tags()
    assert "nas/alpha" in tags["images"]  # the heatmap, once per epoch and at the start
    assert len(acc.Images("nas/alpha")) == 3
    entropy = [e.value for e in acc.Scalars("nas/alpha_entropy")]
    assert len(entropy) == 3 and entropy[-1] < entropy[0]
    assert "nas/op_share/skip_connect" in tags["scalars"]
    assert "nas/supernet_val_acc" in tags["scalars"]


def test_load_run_rebuilds_the_derived_network(searched):
    from pdl_experiments import load_run
    from pdl_experiments.data import TensorLoader
    from pdl_experiments.training.task import classification_metrics

    metrics, run_dir = searched
    loaded = load_run(run_dir)
    assert isinstance(loaded.model, DerivedNetwork)
    assert not loaded.model.training
    test = classification_metrics(loaded.model, TensorLoader(*loaded.data.test, 1024))
    assert test["acc"] == pytest.approx(metrics["test/acc"])


def test_random_baseline_skips_the_search(tmp_path):
    metrics, run_dir = run_small(tmp_path, SMALL + ["nas.baseline=random", "seed=3"])
    saved = json.loads((run_dir / "genotype.json").read_text())
    assert saved["source"] == "random"
    assert saved["genotype"] == random_genotype(DEFAULT_OPS, 2, torch.Generator().manual_seed(3))
    assert "nas/alpha_entropy_start" not in metrics and metrics["nas/search_time_s"] == 0
    last = load_checkpoint(run_dir)  # no search phase trained: retrain is the only one
    assert last["phase"] == "retrain" and last["extra"]["phases"]["search"]["genotype_source"] == "random"
    assert metrics["test/acc"] > 0.3


def test_bad_values_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"nas.ops=\[none\]: expected distinct operations"):
        run_small(tmp_path, SMALL + ["nas.ops=[none]"])
    with pytest.raises(ConfigError, match=r"nas.ops=\[conv_3x3,conv_3x3\]"):
        run_small(tmp_path, SMALL + ["nas.ops=[conv_3x3,conv_3x3]"])
    with pytest.raises(ConfigError, match="nas.channels=0"):
        run_small(tmp_path, SMALL + ["nas.channels=0"])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_second_order_search_runs_through_the_trainer(tmp_path):
    metrics, run_dir = run_small(
        tmp_path,
        SMALL + ["nas.second_order=true", "nas.cells=1", "nas.search_epochs=1", "nas.retrain_epochs=1"],
    )
    assert metrics["nas/alpha_entropy_end"] < metrics["nas/alpha_entropy_start"]
    last = load_checkpoint(run_dir)  # the search was recorded, the retrain checkpointed at its end
    assert last["phases_done"] == ["search"] and last["phase"] == "retrain" and last["phase_complete"]


# -- baselines at equal compute and size ---------------------------------------------------------
def test_channels_for_params_picks_the_nearest_size():
    from pdl_experiments.models.darts import channels_for_params

    info, norm = _info((1, 8, 8)), BatchNormSpec()
    heavy = [[["conv_5x5", 0], ["conv_5x5", 1]], [["conv_5x5", 1], ["conv_3x3", 2]]]
    light = [[["max_pool_3x3", 0], ["skip_connect", 1]], [["avg_pool_3x3", 1], ["conv_3x3", 2]]]

    def params(g, c):
        return count_params(DerivedNetwork(info, norm, g, 2, c))

    for genotype in (heavy, light):
        c = channels_for_params(info, norm, genotype, 2, 10_000)
        gap = abs(params(genotype, c) - 10_000)
        assert gap <= abs(params(genotype, c - 1) - 10_000) and gap <= abs(params(genotype, c + 1) - 10_000)
    # The heavy cell needs fewer channels for the same parameter count.
    assert channels_for_params(info, norm, heavy, 2, 10_000) < channels_for_params(
        info, norm, light, 2, 10_000
    )


@pytest.fixture(scope="module")
def random_searched(tmp_path_factory):
    """Random search on the DARTS search's FLOPs, then retrained at a parameter budget."""
    return run_small(
        tmp_path_factory.mktemp("rs"),
        SMALL + ["nas.baseline=random_search", "nas.candidate_epochs=1", "nas.param_budget=3000"],
        name="rs",
    )


def test_random_search_spends_the_darts_search_flops_and_keeps_the_best(random_searched, searched):
    metrics, run_dir = random_searched
    darts, _ = searched
    # The budget is what the DARTS search of the same config counted.
    assert metrics["nas/budget_flops"] == pytest.approx(darts["nas/search_flops"], rel=1e-9)
    assert 1 < metrics["nas/candidates"]
    assert metrics["nas/search_flops"] <= metrics["nas/budget_flops"]
    ckpt = load_checkpoint(run_dir, "best.pt")
    phases = ckpt["extra"]["phases"]
    tried = [phases[f"candidate{j}"] for j in range(1, int(metrics["nas/candidates"]) + 1)]
    # One more candidate would have gone over the budget (each one costs about the same).
    assert metrics["nas/search_flops"] + max(c["flops"] for c in tried) > metrics["nas/budget_flops"]
    best = max(tried, key=lambda c: (c["acc"], -c["loss"]))
    saved = json.loads((run_dir / "genotype.json").read_text())
    assert saved["source"] == "random_search" and saved["genotype"] == best["genotype"]
    # Retrained at the channel count nearest the parameter budget.
    channels = int(metrics["nas/retrain_channels"])
    assert metrics["params"] == count_params(
        DerivedNetwork(_info((1, 8, 8)), BatchNormSpec(), best["genotype"], 2, channels)
    )
    near = [
        count_params(DerivedNetwork(_info((1, 8, 8)), BatchNormSpec(), best["genotype"], 2, c))
        for c in (channels - 1, channels + 1)
    ]
    assert all(abs(metrics["params"] - 3000) <= abs(p - 3000) for p in near)


def test_a_fixed_number_of_candidates(tmp_path):
    metrics, run_dir = run_small(
        tmp_path,
        SMALL + ["nas.baseline=random_search", "nas.candidates=2", "nas.candidate_epochs=1", "seed=5"],
    )
    assert metrics["nas/candidates"] == 2
    last = load_checkpoint(run_dir)
    assert last["phases_done"] == ["candidate1", "candidate2", "search"]
    gen = torch.Generator().manual_seed(5)
    drawn = [random_genotype(DEFAULT_OPS, 2, gen) for _ in range(2)]
    assert [last["extra"]["phases"][f"candidate{j}"]["genotype"] for j in (1, 2)] == drawn


def test_skip_connections_are_counted_every_search_epoch(searched):
    metrics, run_dir = searched
    per_epoch = [metrics[f"nas/skip_count/epoch{e}"] for e in range(3)]  # start + 2 search epochs
    assert "nas/skip_count/epoch3" not in metrics
    # The genotype is derived from the final alpha: its count is the last epoch's.
    assert per_epoch[-1] == metrics["nas/skip_count"]
    assert metrics["nas/skip_count_max"] == max(per_epoch)
    # TensorBoard: at the start, after each search epoch, then once more as the run's final value.
    logged = [e.value for e in _scalar_tags(run_dir).Scalars("nas/skip_count")]
    assert logged == [*per_epoch, metrics["nas/skip_count"]]
    assert 0 <= metrics["nas/skip_share_end"] <= 1


def test_random_search_stopped_inside_a_candidate_resumes_to_the_same_result(tmp_path, monkeypatch):
    from helpers import interrupt_and_resume, without_timings

    overrides = SMALL + ["nas.baseline=random_search", "nas.candidates=2", "nas.candidate_epochs=2"]

    def in_candidate2_epoch2(trainer) -> bool:
        return trainer.state.phases_done == ["candidate1"] and trainer.epoch == 2

    clean, last, resumed = interrupt_and_resume(tmp_path, monkeypatch, overrides, in_candidate2_epoch2)
    assert last["phase"] == "candidate2" and not last["phase_complete"]
    assert without_timings(resumed) == pytest.approx(without_timings(clean), rel=1e-6, abs=1e-9)


def test_the_preset_compares_darts_with_random_search_at_one_size():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        raw = hydra_compose(
            config_name="config", overrides=["experiment=nas_vs_random"], return_hydra_config=True
        )
    assert str(raw.hydra.sweeper.params["nas.baseline"]).split(",") == ["none", "random_search"]
    cfg = compose(["experiment=nas_vs_random"])
    # Random search on the search's own FLOPs (no fixed count), both retrained at one size.
    assert cfg.technique == "nas" and cfg.nas.candidates is None and cfg.nas.param_budget > 0
