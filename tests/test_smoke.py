import json


def test_default_run_small(small_run):
    metrics, run_dir = small_run(["trainer.max_epochs=2"])
    assert metrics["test/acc"] > 0.5
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/acc"] == metrics["test/acc"]
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
