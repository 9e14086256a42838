"""What a dead MLflow tracking server costs a run (docs/faults.md, issue #35).

    python scripts/fault_mlflow_bench.py [--repeats 6] [--epochs 40]

Starts `mlflow server` on 127.0.0.1 (SQLite store in a temporary directory) and runs the same
pdl-run three ways, one after another, `--repeats` times:

  clean   logger=[tensorboard,mlflow] with the server up all along
  killed  the same, the server killed (SIGKILL) when the run logs the end of epoch 3, and not
          back before the run ends; then the server is started again on the same store and
          the run's undelivered metrics are sent with the replay command it printed
  none    logger=tensorboard (no MLflow at all), for scale

(the order turning each repeat), and prints each one's wall time (the process's, start-up included, and the run's own
run/wall_s), the median ratio killed / clean, and whether the killed run's MLflow run ended
whole (every epoch's val/loss) and FINISHED once replayed. Exit status 1 when the killed runs
are over 10 % slower than the clean ones or a replayed MLflow run is not whole.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
RUN = ["trainer.num_threads=1", "bn.diagnostics=false", "trainer.progress=plain"]


class Server:
    def __init__(self, store: Path):
        self.store = store
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            PY,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        cmd += ["--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}"]
        cmd += ["--artifacts-destination", str(self.store / "artifacts")]
        env = {**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.store / "server.log", "a") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.store, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise SystemExit("mlflow server did not answer within 120 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def run(args: list[str], run_dir: Path, server: Server | None = None) -> dict:
    """One pdl-run; with `server`: kill it when epoch 3 ends. Its wall times and log lines."""
    cmd = [PY, "-m", "pdl_experiments.cli", *RUN, *args, f"hydra.run.dir={run_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=run_dir.parent, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if server is not None and " epoch 3/" in line:
            server.kill()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"pdl-run exited {rc}: {''.join(lines)[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall": wall, "run_wall": metrics["run/wall_s"], "log": "".join(lines)}


def replayed_whole(server: Server, run_dir: Path, epochs: int) -> tuple[bool, str]:
    """Server back on the same store, the printed replay command run: (whole and FINISHED, how)."""
    from mlflow.tracking import MlflowClient

    server.start()
    t0 = time.perf_counter()
    sent = subprocess.run(
        [PY, "-m", "pdl_experiments.training.mlflow_sink", str(run_dir)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - t0
    client = MlflowClient(tracking_uri=server.url)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    status = client.get_run(run_id).info.status
    steps = {m.step for m in client.get_metric_history(run_id, "val/loss")}
    said = (sent.stdout.strip().splitlines() or ["nothing sent"])[-1]  # after MLflow's "View run" lines
    whole = status == "FINISHED" and len(steps) == epochs
    return whole, f"{said} in {took:.1f} s; {status}, val/loss at {len(steps)} epochs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--epochs", type=int, default=40)
    a = p.parse_args()
    epochs = [f"trainer.max_epochs={a.epochs}"]
    times: dict[str, list[dict]] = {"clean": [], "killed": [], "none": []}
    ok = True
    with tempfile.TemporaryDirectory(prefix="pdl-fault-bench-") as tmp:
        root = Path(tmp)
        server = Server(root)
        server.start()
        try:
            mlflow = ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={server.url}"]
            for i in range(a.repeats):
                # The order turns each repeat: a drift in the machine's load favours none of them.
                for kind in ("none", "clean", "killed")[i % 3 :] + ("none", "clean", "killed")[: i % 3]:
                    if kind == "none":
                        times["none"].append(run([*epochs, "logger=tensorboard"], root / f"none{i}"))
                    elif kind == "clean":
                        times["clean"].append(run([*epochs, *mlflow], root / f"clean{i}"))
                    else:
                        killed = run([*epochs, *mlflow], root / f"killed{i}", server=server)
                        times["killed"].append(killed)
                        assert killed["log"].count("does not answer") == 1, killed["log"][-2000:]
                        whole, how = replayed_whole(server, root / f"killed{i}", a.epochs)
                        ok &= whole
                print(
                    f"repeat {i + 1}: "
                    + "  ".join(
                        f"{k} {v[-1]['wall']:.1f} s (run {v[-1]['run_wall']:.1f} s)" for k, v in times.items()
                    )
                    + f"; replayed: {how}",
                    flush=True,
                )
        finally:
            server.kill()
    med = {
        k: (statistics.median(r["wall"] for r in v), statistics.median(r["run_wall"] for r in v))
        for k, v in times.items()
    }
    print(f"\n{a.epochs} epochs, {a.repeats} repeats, medians (process wall / run/wall_s):")
    for k, (w, rw) in med.items():
        print(f"  {k:7s} {w:6.2f} s / {rw:6.2f} s")
    ratio, run_ratio = med["killed"][0] / med["clean"][0], med["killed"][1] / med["clean"][1]
    print(f"killed / clean: {ratio:.3f} (process), {run_ratio:.3f} (run/wall_s); limit 1.10")
    print(f"every replayed MLflow run whole and FINISHED: {ok}")
    sys.exit(0 if ok and ratio <= 1.10 else 1)


if __name__ == "__main__":
    main()
