"""The MLflow backend of a run's logger: training never waits on the tracking server.

The run's MLflow run is created when the run starts (a server that does not answer then is
an error naming `logger.mlflow.tracking_uri`, within seconds). After that, metrics go into a
queue that a background thread sends, in batches, about once a second. A server that stops
answering costs the training nothing: the thread warns once, naming the server, keeps the
metrics and tries again every few seconds; once the server is back it sends what waited.
A server still away when the run ends: the run ends as usual (metrics.json, checkpoints),
and what was not delivered is kept in the run directory, `mlflow_undelivered.json`, with
one warning saying how to send it:

    python -m pdl_experiments.training.mlflow_sink RUN_DIR [--tracking-uri URI]

(or `replay(run_dir)` from Python), which sends the metrics and ends the MLflow run with the
status the run had. A resumed run sends what its first part left undelivered too.

MLflow's own asynchronous logging (`log_batch(..., synchronous=False)`) is not used: in
MLflow 3.18 a batch whose request fails is reported and dropped (AsyncLoggingQueue._log_batch),
so nothing is sent when the server returns; and each request of its worker retries with
backoffs of up to minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7) before failing.
Here every request is tried once (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0 and a 10 s
MLFLOW_HTTP_REQUEST_TIMEOUT unless set in the environment): the retrying is the thread's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("pdl_experiments")

MLFLOW_RUN_ID_FILE = "mlflow_run_id"  # in the run directory: a resumed run continues its MLflow run
UNDELIVERED_FILE = "mlflow_undelivered.json"  # in the run directory: what the server never got
REPLAY_COMMAND = "python -m pdl_experiments.training.mlflow_sink"
PROBE_TIMEOUT_S = 5.0  # a tracking server that does not accept a connection within this: refused
BATCH = 1000  # MLflow's limit of metrics per log_batch


class MlflowSink:
    """One MLflow run per pdl run: params = the hparams (at the start), metrics per logged step
    and the final ones at the end, tags naming the run directory, where the checkpoints, the
    event file, metrics.json and the config are (nothing is copied into MLflow).

    A run that ends without close() (an exception, a signal) is marked FAILED when this
    object goes away.
    """

    SEND_INTERVAL_S = 1.0  # a batch at most this often while the server answers
    RETRY_INTERVAL_S = 3.0  # between tries while it does not
    DRAIN_S = 30.0  # close(): how long to wait for a server that answers to take the queue

    def __init__(self, settings: Any, run_dir: Path, params: Mapping[str, Any], purge_step: int | None):
        """`params`: the run's hparams, as text (or numbers); `purge_step`: a resumed run's step."""
        # MLflow 3 reports usage to a remote server unless told not to: no network, ever.
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the thread retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient
        except ImportError:
            from ..config import ConfigError

            raise ConfigError(
                'logger=mlflow needs MLflow, which is not installed: pip install -e ".[tracking]"'
            ) from None
        self._Metric = Metric
        self.uri = uri = str(settings.tracking_uri)
        self.run_dir = Path(run_dir)
        self.client = client = MlflowClient(tracking_uri=uri)
        try:
            _probe(uri)
            self.run_id = self._start(client, str(settings.experiment), params, purge_step)
        except Exception as e:
            from ..config import ConfigError

            raise ConfigError(
                f"logger.mlflow.tracking_uri={uri}: no MLflow run could be started there ({_why(e)}); "
                "start the tracking server, or choose another logger.mlflow.tracking_uri or logger"
            ) from None
        self._lock = threading.Lock()
        self._pending: list[Any] = self._undelivered_before()  # a resumed run's leftovers first
        self._inflight = 0  # metrics the thread took from the queue and is sending
        self._wake = threading.Event()
        self._closing = False
        self._down_since: float | None = None  # the server stopped answering at (monotonic)
        self._warned = False
        self._thread = threading.Thread(target=self._send_loop, name="pdl-mlflow", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _end_run, client, self.run_id, "FAILED")

    # ------------------------------------------------------------------ start (in the caller)
    def _start(self, client: Any, experiment: str, params: Mapping[str, Any], purge_step: int | None) -> str:
        from mlflow.entities import Param

        _make_sqlite_parent(self.uri)
        experiment_id = _experiment_id(client, experiment)
        id_file = self.run_dir / MLFLOW_RUN_ID_FILE
        resumed = self._resumable(id_file) if purge_step is not None else None
        if resumed is not None:
            client.update_run(resumed, status="RUNNING")
            return resumed
        where = str(self.run_dir.resolve())
        tags = {
            "pdl.run_dir": where,
            "mlflow.source.name": "pdl-run",
            "mlflow.source.type": "LOCAL",
            "mlflow.note.content": (
                f"Run directory: `{where}` (checkpoints, TensorBoard events, metrics.json, .hydra/config.yaml)"
            ),
        }
        run = client.create_run(experiment_id, run_name=_run_name(self.run_dir), tags=tags)
        run_id = str(run.info.run_id)
        id_file.write_text(run_id + "\n")
        items = [Param(mlflow_name(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    def _resumable(self, id_file: Path) -> str | None:
        try:
            run_id = id_file.read_text().strip()
            self.client.get_run(run_id)
            return run_id
        except Exception:  # no file, or a run this store does not hold: start a new one
            return None

    def _undelivered_before(self) -> list[Any]:
        path = self.run_dir / UNDELIVERED_FILE
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        if saved.get("run_id") != self.run_id:
            return []
        path.unlink(missing_ok=True)  # in the queue now; written again if still not delivered
        return [self._Metric(k, float(v), int(ts), int(s)) for k, v, ts, s in saved.get("metrics", [])]

    # ------------------------------------------------------------------ the sink's calls (never block)
    def scalars(self, values: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [self._Metric(mlflow_name(k), float(v), now, step) for k, v in values.items()]
        with self._lock:
            self._pending.extend(items)

    def final(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        self.scalars(metrics, step)

    def flush(self, wait_s: float = 10.0) -> None:
        """Send the queue now, and wait (up to wait_s) while the server takes it; not at all
        while it does not answer. Called as a run ends, a failed one too: its last metrics go."""
        self._wake.set()
        deadline = time.monotonic() + wait_s
        while self._down_since is None and time.monotonic() < deadline and self._thread.is_alive():
            with self._lock:
                if not self._pending and not self._inflight:
                    return
            time.sleep(0.02)

    def close(self, status: str = "FINISHED") -> None:
        """Send what is queued (waiting up to DRAIN_S while the server takes it), end the MLflow
        run; a server that does not answer: what is left goes to mlflow_undelivered.json."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=self.DRAIN_S + 15)
        self._finalizer.detach()
        with self._lock:
            left, self._pending = self._pending, []
        if self._down_since is None and not left:
            try:
                self.client.set_terminated(self.run_id, status)
                return
            except Exception as e:
                self._note_down(e)
        self._keep_undelivered(left, status)

    # ------------------------------------------------------------------ the background thread
    def _send_loop(self) -> None:
        deadline = None
        while True:
            down = self._down_since is not None
            self._wake.wait(self.RETRY_INTERVAL_S if down else self.SEND_INTERVAL_S)
            self._wake.clear()
            closing = self._closing
            if closing and deadline is None:
                deadline = time.monotonic() + self.DRAIN_S
            sent = self._send_pending()
            with self._lock:
                empty = not self._pending
            if closing and (empty or not sent or time.monotonic() > (deadline or 0)):
                return  # close() ends the run, or keeps what is left

    def _send_pending(self) -> bool:
        """Send the queue, batch by batch; False when the server did not take one."""
        if self._down_since is not None:
            try:  # a TCP connection first: nothing is encoded for a server still away
                _probe(self.uri)
            except OSError:
                return False
        with self._lock:
            pending, self._pending = self._pending, []
            self._inflight = len(pending)
        for i in range(0, len(pending), BATCH):
            try:
                self.client.log_batch(self.run_id, metrics=pending[i : i + BATCH])
            except Exception as e:
                with self._lock:  # back at the front, in order, for the next try
                    self._pending[:0] = pending[i:]
                    self._inflight = 0
                self._note_down(e)
                return False
        with self._lock:
            self._inflight = 0
        if self._down_since is not None:
            log.info(
                "MLflow tracking server %s answers again after %.0f s: the queued metrics are sent",
                self.uri,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return True

    def _note_down(self, err: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not self._warned:
            self._warned = True
            log.warning(
                "MLflow tracking server %s does not answer (%s): training goes on; metrics wait in "
                "a queue and are sent when it is back",
                self.uri,
                _why(err),
            )

    def _keep_undelivered(self, left: list[Any], status: str) -> None:
        path = self.run_dir / UNDELIVERED_FILE
        saved = {
            "tracking_uri": self.uri,
            "run_id": self.run_id,
            "status": status,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in left],
        }
        path.write_text(json.dumps(saved) + "\n")
        steps = sorted({m.step for m in left})
        span = f", steps {steps[0]}-{steps[-1]}" if steps else ""
        log.warning(
            "MLflow tracking server %s did not answer: %d metric values%s and the run's end (%s) "
            "were not delivered; they are kept in %s: send them with `%s %s`",
            self.uri,
            len(left),
            span,
            status,
            path,
            REPLAY_COMMAND,
            self.run_dir,
        )


# MLflow's names may hold letters, digits, _ - . / and spaces (and ':' except on Windows).
_MLFLOW_BAD = re.compile(r"[^\w./ -]")


def mlflow_name(key: str) -> str:
    """A metric or param key as MLflow accepts it: `adv/acc/fgsm@0.1` -> `adv/acc/fgsm_0.1`."""
    return _MLFLOW_BAD.sub("_", key)[:250]


def replay(run_dir: str | os.PathLike, tracking_uri: str | None = None) -> int:
    """Send what a run could not deliver (its mlflow_undelivered.json) and end its MLflow run
    with the status the run had; returns the number of metric values sent (0: nothing was
    kept). The file is removed once everything is delivered."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    path = Path(run_dir) / UNDELIVERED_FILE
    if not path.is_file():
        return 0
    saved = json.loads(path.read_text())
    client = MlflowClient(tracking_uri=tracking_uri or saved["tracking_uri"])
    metrics = [Metric(k, float(v), int(ts), int(s)) for k, v, ts, s in saved["metrics"]]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(saved["run_id"], metrics=metrics[i : i + BATCH])
    client.set_terminated(saved["run_id"], saved.get("status", "FINISHED"))
    path.unlink()
    return len(metrics)


def _why(err: BaseException) -> str:
    """The short reason of a failed request: `Connection refused`, `Read timed out`, ..."""
    text = str(err)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text) or re.search(r"(Read timed out|timed out)", text)
    if found:
        return found.group(1).strip()
    return (text.strip().splitlines() or [type(err).__name__])[0][:160]


def _probe(uri: str) -> None:
    """An http(s) tracking URI: its host accepts a TCP connection within PROBE_TIMEOUT_S (an
    OSError otherwise). Nothing for a local store (sqlite:, file:, a path). About a
    millisecond when the server is up."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
        pass


def _experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name`, created when missing. Jobs of a parallel sweep (joblib,
    SLURM) may all find it missing at once: the server creates it for one of them and refuses
    the others (RESOURCE_ALREADY_EXISTS), which then read the one created."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _end_run(client: Any, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception:  # at interpreter exit the store may be gone: nothing left to do
        pass


def _make_sqlite_parent(uri: str) -> None:
    """SQLite creates the database file but not its directory (sqlite:///outputs/mlflow.db)."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _run_name(run_dir: Path) -> str:
    """The run directory below outputs/ (runs/bn/<date>/<time>, multirun/<date>/<time>/<job>)."""
    try:
        rel = run_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return run_dir.name
    parts = rel.parts[1:] if rel.parts[:1] == ("outputs",) else rel.parts
    return "/".join(parts) or run_dir.name


def main(argv: list[str] | None = None) -> None:
    """python -m pdl_experiments.training.mlflow_sink RUN_DIR... [--tracking-uri URI]"""
    import argparse

    p = argparse.ArgumentParser(
        prog=REPLAY_COMMAND,
        description="Send the metrics a run could not deliver to its MLflow server (mlflow_undelivered.json).",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--tracking-uri", default=None, help="default: the server the run logged to")
    args = p.parse_args(argv)
    for run_dir in args.run_dirs:
        try:
            n = replay(run_dir, args.tracking_uri)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            sys.stderr.write(f"{REPLAY_COMMAND}: error: {run_dir}: {first}\n")
            sys.exit(1)
        print(f"{run_dir}: {n} metric values sent" if n else f"{run_dir}: nothing undelivered")


if __name__ == "__main__":
    main()
