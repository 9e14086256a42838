"""A preset's claim, judged on paired seeds.

A preset sweep (configs/experiment/<name>.yaml) states its claim under `claim:`, beside the
settings it sweeps:

    claim:
      says: With batch norm the deep plain net trains at learning rates 10x higher ...
      published: Ioffe & Szegedy 2015, ImageNet: ... (what differs from ours)
      chance: {test/acc: 0.1}          # a diverged job counts as this, it is not dropped
      compare:                         # every comparison must hold for the claim to hold
        - label: test acc, BN on - off
          metric: test/acc
          better: {bn.enabled: true}   # + this setting ...
          than: {bn.enabled: false}    # - that one, seed by seed
          at: {optimizer.lr: [0.3, 1.0]}   # one paired test per value (default: every value
                                           # of the varying axes the comparison leaves open)
          margin: 0.0                  # holds when the 95 % interval lies wholly above it
      figure: {x: optimizer.lr, y: test/acc, series: bn.enabled, log_x: true}

A comparison is a signed sum of terms, per seed: `better` - `than` (of `metric`, or of
`than_metric` for the second), or `terms: [[1, {where}, metric], [-1, {where}], ...]` for
anything else (a difference of differences). Per seed d_i = sum_k w_k m_k(seed i); the
verdict comes from the mean of d and its 95 % Student-t interval: *holds* when the interval
lies wholly above `margin` (or, with `within: delta`, wholly inside (-delta, delta)); *does
not hold* otherwise, with the numbers; *incomplete* when a job it needs failed or is missing
(named). The seeds are the sweep's own: the same in every setting.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOLDS, DOES_NOT_HOLD, INCOMPLETE = "holds", "does not hold", "incomplete"


@dataclass
class Result:
    """One paired comparison at one setting of the axes it leaves open."""

    label: str
    n: int = 0
    mean: float = math.nan
    half: float = math.nan  # half-width of the 95 % t interval
    verdict: str = INCOMPLETE
    missing: list[str] = field(default_factory=list)  # jobs it needed that failed or are absent
    bound: str = ""  # what the interval is held against

    def line(self) -> str:
        if self.verdict == INCOMPLETE:
            return f"{self.label}: **incomplete**, {'; '.join(self.missing)}"
        lo, hi = self.mean - self.half, self.mean + self.half
        return (
            f"{self.label}: {_num(self.mean)} [{_num(lo)}, {_num(hi)}] over {self.n} seeds "
            f"{self.bound}: **{self.verdict}**"
        )


@dataclass
class Verdict:
    status: str  # holds | does not hold | incomplete | not run
    results: list[Result]
    seeds: int = 0

    def headline(self) -> str:
        if self.status == "not run":
            return "not run"
        failing = [r for r in self.results if r.verdict != HOLDS]
        if self.status == HOLDS:
            return f"**holds** ({len(self.results)} paired comparisons, {self.seeds} seeds)"
        if self.status == INCOMPLETE:
            return "**incomplete**: " + "; ".join(m for r in failing for m in r.missing[:3])
        return f"**does not hold here** ({len(self.results) - len(failing)} of {len(self.results)} comparisons hold)"


def norm(value: Any) -> str:
    """An override's value as the sweep wrote it, compared loosely (0.1 == 0.10, True == true)."""
    s = str(value).strip()
    try:
        return repr(float(s))
    except ValueError:
        return s.lower()


def seed_of(row: dict) -> str | None:
    s = row["overrides"].get("seed")
    return None if s is None else norm(s)


def varying_axes(rows: list[dict]) -> dict[str, list[str]]:
    """The swept keys besides the seed, each with its values in the order first seen."""
    axes: dict[str, list[str]] = {}
    for r in rows:
        for k, v in r["overrides"].items():
            if k != "seed" and not k.startswith("hydra"):
                axes.setdefault(k, [])
                if v not in axes[k]:
                    axes[k].append(v)
    return {k: v for k, v in axes.items() if len(v) > 1}


def _matches(row: dict, where: dict[str, Any]) -> bool:
    o = row["overrides"]
    return all(k in o and norm(o[k]) == norm(v) for k, v in where.items())


def _terms(spec: dict) -> list[tuple[float, dict, str]]:
    metric = spec.get("metric")
    if "terms" in spec:
        out = []
        for t in spec["terms"]:
            w, where = float(t[0]), dict(t[1] or {})
            out.append((w, where, str(t[2]) if len(t) > 2 else str(metric)))
        return out
    better, than = dict(spec.get("better") or {}), dict(spec.get("than") or {})
    return [(1.0, better, str(metric)), (-1.0, than, str(spec.get("than_metric", metric)))]


def _expansions(spec: dict, terms: list, axes: dict[str, list[str]]) -> list[dict[str, str]]:
    """The settings of the axes a comparison leaves open (or lists under `at`), one dict each."""
    named = {k for _, where, _ in terms for k in where}
    at = {
        k: [str(v) for v in (vs if isinstance(vs, list) else [vs])]
        for k, vs in (spec.get("at") or {}).items()
    }
    open_axes = {k: at.get(k, vs) for k, vs in axes.items() if k not in named}
    open_axes.update({k: vs for k, vs in at.items() if k not in open_axes})
    keys = list(open_axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(open_axes[k] for k in keys))]


def value_of(row: dict, metric: str, chance: dict[str, float]) -> float | None:
    """A job's number for `metric`: chance for a diverged job, None when it has none."""
    diverged = row["status"].startswith("diverged") or row["metrics"].get("run/diverged") == 1
    if diverged and metric in chance:
        return float(chance[metric])
    if not row["status"].startswith(("ok", "diverged")):
        return None
    v = row["metrics"].get(metric)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def compare(spec: dict, rows: list[dict], chance: dict[str, float]) -> list[Result]:
    """The paired results of one comparison, one per setting of the axes it leaves open."""
    terms = _terms(spec)
    seeds = sorted({s for r in rows if (s := seed_of(r)) is not None}, key=float)
    out = []
    for extra in _expansions(spec, terms, varying_axes(rows)):
        label = str(spec.get("label") or spec.get("metric"))
        if extra:
            label += " at " + ", ".join(f"{k}={v}" for k, v in extra.items())
        res = Result(label)
        diffs = []
        for seed in seeds:
            total, ok = 0.0, True
            for w, where, metric in terms:
                jobs = [r for r in rows if seed_of(r) == seed and _matches(r, {**where, **extra})]
                setting = ", ".join(f"{k}={v}" for k, v in {**where, **extra}.items()) or "every job"
                if len(jobs) != 1:
                    res.missing.append(f"{setting}, seed {seed.removesuffix('.0')}: {len(jobs) or 'no'} jobs")
                    ok = False
                    continue
                v = value_of(jobs[0], metric, chance)
                if v is None:
                    res.missing.append(f"{Path(jobs[0]['run']).name} ({jobs[0]['status'][:60]}, {metric})")
                    ok = False
                    continue
                total += w * v
            if ok:
                diffs.append(total)
        out.append(_judge(res, diffs, spec))
    return out


def _judge(res: Result, diffs: list[float], spec: dict) -> Result:
    res.n = len(diffs)
    if res.missing or len(diffs) < 2:
        if not res.missing:
            res.missing.append(f"{len(diffs)} seed(s): a paired interval needs 2 or more")
        res.verdict = INCOMPLETE
        return res
    from scipy.stats import t

    res.mean = statistics.fmean(diffs)
    res.half = float(t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    lo, hi = res.mean - res.half, res.mean + res.half
    within = spec.get("within")
    if within is not None:
        d = float(within)
        res.bound = f"vs the bound ±{_num(d)}"
        res.verdict = HOLDS if -d < lo and hi < d else DOES_NOT_HOLD
    else:
        margin = float(spec.get("margin", 0.0))
        res.bound = f"vs {_num(margin)}"
        res.verdict = HOLDS if lo > margin else DOES_NOT_HOLD
    return res


def judge(claim: dict, rows: list[dict]) -> Verdict:
    """The claim's verdict over a sweep's jobs (`summary.collect` rows)."""
    if not rows:
        return Verdict("not run", [])
    chance = {str(k): float(v) for k, v in (claim.get("chance") or {}).items()}
    results = [r for spec in claim.get("compare") or [] for r in compare(spec, rows, chance)]
    seeds = len({seed_of(r) for r in rows})
    if not results:
        return Verdict(INCOMPLETE, [Result("the claim", missing=["no comparison to judge"])], seeds)
    if any(r.verdict == INCOMPLETE for r in results):
        return Verdict(INCOMPLETE, results, seeds)
    return Verdict(HOLDS if all(r.verdict == HOLDS for r in results) else DOES_NOT_HOLD, results, seeds)


def claim_of(rows: list[dict]) -> dict | None:
    """The `claim:` of the preset a sweep's jobs were composed with (their .hydra/config.yaml)."""
    from omegaconf import OmegaConf

    from ..loading.safety import load_yaml_config

    for r in rows:
        path = Path(r["run"]) / ".hydra" / "config.yaml"
        if path.is_file():
            claim = OmegaConf.select(load_yaml_config(path), "claim", default=None)
            if claim is not None:
                return OmegaConf.to_container(claim, resolve=False)  # type: ignore[return-value]
    return None


def _num(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if abs(x) < 1e-9:  # a difference of equal floats, up to rounding: 0
        return "0"
    return f"{x:.3g}" if abs(x) < 1e-3 else f"{x:.4f}".rstrip("0").rstrip(".")


def markdown(claim: dict, verdict: Verdict, figure: str | None, where: str = "") -> list[str]:
    """The claim's section: what it says, its figure, its verdict line by line, the paper."""
    lines = [f"**Claim.** {str(claim.get('says', '')).strip()}", ""]
    if figure:
        lines += [f"![the claim's figure]({figure})", ""]
    lines += [f"**Verdict{f' ({where})' if where else ''}:** {verdict.headline()}", ""]
    lines += [f"- {r.line()}" for r in verdict.results] + [""]
    if claim.get("published"):
        lines += [f"**Published.** {str(claim['published']).strip()}", ""]
    return lines
