"""A preset's claim, judged on paired seeds.

A preset sweep (configs/experiment/<name>.yaml) states its claim under `claim:`, beside the
settings it sweeps:

    claim:
      short: BN trains at 10x the learning rate   # a few words, for the README's table
      says: With batch norm the deep plain net trains at learning rates 10x higher ...
      published: Ioffe & Szegedy 2015, ImageNet: ... (what differs from ours)
      chance: {test/acc: 0.1}          # a diverged job counts as this, it is not dropped
      compare:                         # every comparison must hold for the claim to hold
        - label: test acc, BN − no BN
          metric: test/acc
          better: {bn.enabled: true}   # + this setting ...
          than: {bn.enabled: false}    # - that one, seed by seed
          at: {optimizer.lr: [0.3, 1.0]}   # one paired test per value (default: every value
                                           # of the varying axes the comparison leaves open)
          margin: 0.0                  # holds when the 95 % interval lies wholly above it
      figure: {x: optimizer.lr, y: test/acc, series: bn.enabled, log_x: true}

A comparison is a signed sum of terms, per seed: `better` - `than` (of `metric`, or of
`than_metric` for the second), or `terms: [[1, {where}, metric], [-1, {where}], ...]` for
anything else (one setting's level, a difference of differences). Per seed
d_i = sum_k w_k m_k(seed i); the verdict comes from the mean of d and its 95 % Student-t
interval (sweeps/stats.py): *holds* when the interval lies wholly above `margin` (the
default, 0), wholly below `below: X`, or, with `within: delta`, wholly inside
(-delta, delta); *does not hold* otherwise, with the numbers; *incomplete* when a job it
needs failed or is missing (named). The seeds are the sweep's own: the same in every setting.

Metrics that are fractions (accuracies, the share of classes covered) read in percentage
points (a difference) or per cent (one setting's level); others in their own units.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stats import paired

HOLDS, DOES_NOT_HOLD, INCOMPLETE, NOT_RUN = "holds", "does not hold", "incomplete", "not run"
MINUS = "\u2212"  # the true minus sign of a printed number
FRACTION = re.compile(r"(^|[/_])acc([/_]|$)|coverage|share")  # metrics in [0, 1]: in points


@dataclass
class Bound:
    """What a comparison's interval is held against: above `value`, below it, or within ±it."""

    kind: str  # above | below | within
    value: float

    @classmethod
    def of(cls, spec: dict) -> Bound:
        given = [k for k in ("margin", "below", "within") if spec.get(k) is not None]
        if len(given) > 1:
            raise ValueError(
                f"comparison {spec.get('label')!r}: give one of margin, below, within (got {given})"
            )
        if "below" in given:
            return cls("below", float(spec["below"]))
        if "within" in given:
            return cls("within", float(spec["within"]))
        return cls("above", float(spec.get("margin") or 0.0))

    def holds(self, lo: float, hi: float) -> bool:
        if self.kind == "below":
            return hi < self.value
        if self.kind == "within":
            return -self.value < lo and hi < self.value
        return lo > self.value


@dataclass
class Result:
    """One paired comparison at one setting of the axes it leaves open."""

    label: str
    setting: dict[str, str] = field(default_factory=dict)  # the open axes' values it is at
    bound: Bound = field(default_factory=lambda: Bound("above", 0.0))
    fraction: bool = False  # its metric is a fraction: shown in points (or per cent)
    level: bool = False  # one setting's value (a single +1 term), not a difference
    n: int = 0
    mean: float = math.nan
    half: float = math.nan  # half-width of the 95 % t interval
    verdict: str = INCOMPLETE
    missing: list[str] = field(default_factory=list)  # jobs it needed that failed or are absent

    def where(self) -> str:
        return ", ".join(f"{k} = {v}" for k, v in self.setting.items())

    def measured(self) -> str:
        """'+44.0 [+41.3, +46.7] points', '49.0 [24.0, 74.0] %', '+85.3 [+60.2, +110]'."""
        if self.n == 0 or math.isnan(self.mean):
            return "—"
        sign = not self.level
        values = [
            _show(x, self.fraction, sign) for x in (self.mean, self.mean - self.half, self.mean + self.half)
        ]
        return f"{values[0]} [{values[1]}, {values[2]}]{self._unit(plural=True)}"

    def needed(self) -> str:
        """'> 30 points', '< 90 %', 'within ±1 point'."""
        v = self.bound.value * (100 if self.fraction else 1)
        value = f"{MINUS if v < 0 else ''}{round(abs(v), 6):g}"  # 30, 90, 1, 0.5: as written
        unit = self._unit(plural=abs(self.bound.value * (100 if self.fraction else 1)) != 1)
        if self.bound.kind == "within":
            return f"within ±{value}{unit}"
        return f"{'<' if self.bound.kind == 'below' else '>'} {value}{unit}"

    def outcome(self) -> str:
        if self.verdict == INCOMPLETE:
            return f"incomplete: {'; '.join(self.missing)}"
        return self.verdict

    def line(self) -> str:
        """The comparison on one line (the console, claim.md's plain text)."""
        at = f" at {self.where()}" if self.setting else ""
        if self.verdict == INCOMPLETE:
            return f"{self.label}{at}: {self.outcome()}"
        return (
            f"{self.label}{at}: {self.measured()} over {self.n} seeds, needed {self.needed()}: {self.verdict}"
        )

    def _unit(self, plural: bool) -> str:
        if not self.fraction:
            return ""
        return " %" if self.level else (" points" if plural else " point")


@dataclass
class Verdict:
    status: str  # holds | does not hold | incomplete | not run
    results: list[Result]
    seeds: list[str] = field(default_factory=list)  # the sweep's seeds, as numbers' text
    dataset: str = ""  # what the sweep ran on (its own config)

    def headline(self) -> str:
        """'holds on digits, 16 of 16 comparisons, seeds 0-4'."""
        if self.status == NOT_RUN:
            return NOT_RUN
        on = f" on {self.dataset}" if self.dataset else ""
        seeds = f", {seed_span(self.seeds)}" if self.seeds else ""
        total = len(self.results)
        if self.status == INCOMPLETE:
            judged = sum(r.verdict != INCOMPLETE for r in self.results)
            return f"incomplete{on}, {judged} of {total} comparisons judged{seeds}"
        held = sum(r.verdict == HOLDS for r in self.results)
        word = "holds" if self.status == HOLDS else "does not hold"
        return f"{word}{on}, {held} of {total} comparisons{' hold' if held != total else ''}{seeds}"

    def missing(self, most: int = 3) -> list[str]:
        return [m for r in self.results for m in r.missing][:most]


def seed_span(seeds: list[str]) -> str:
    """'seeds 0-4', 'seeds 0-2, 7', 'seed 3'."""
    nums = sorted({int(float(s)) for s in seeds})
    runs: list[list[int]] = []
    for s in nums:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs]
    return f"seed{'s' if len(nums) != 1 else ''} {', '.join(parts)}"


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


def matches(row: dict, where: dict[str, Any]) -> bool:
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
    bound = Bound.of(spec)
    fraction = all(FRACTION.search(m) for _, _, m in terms)
    level = len(terms) == 1 and terms[0][0] == 1.0
    out = []
    for extra in _expansions(spec, terms, varying_axes(rows)):
        res = Result(str(spec.get("label") or spec.get("metric")), extra, bound, fraction, level)
        diffs = []
        for seed in seeds:
            total, ok = 0.0, True
            for w, where, metric in terms:
                jobs = [r for r in rows if seed_of(r) == seed and matches(r, {**where, **extra})]
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
        out.append(_judge(res, diffs))
    return out


def _judge(res: Result, diffs: list[float]) -> Result:
    res.n = len(diffs)
    if res.missing or len(diffs) < 2:
        if not res.missing:
            res.missing.append(f"{len(diffs)} seed(s): a paired interval needs 2 or more")
        res.verdict = INCOMPLETE
        return res
    i = paired(diffs)
    res.mean, res.half = i.mean, i.half
    res.verdict = HOLDS if res.bound.holds(i.lo, i.hi) else DOES_NOT_HOLD
    return res


def judge(claim: dict, rows: list[dict]) -> Verdict:
    """The claim's verdict over a sweep's jobs (`summary.collect` rows)."""
    if not rows:
        return Verdict(NOT_RUN, [])
    chance = {str(k): float(v) for k, v in (claim.get("chance") or {}).items()}
    results = [r for spec in claim.get("compare") or [] for r in compare(spec, rows, chance)]
    seeds = sorted({s for r in rows if (s := seed_of(r)) is not None}, key=float)
    data = dataset_of(rows)
    if not results:
        return Verdict(INCOMPLETE, [Result("the claim", missing=["no comparison to judge"])], seeds, data)
    if any(r.verdict == INCOMPLETE for r in results):
        return Verdict(INCOMPLETE, results, seeds, data)
    status = HOLDS if all(r.verdict == HOLDS for r in results) else DOES_NOT_HOLD
    return Verdict(status, results, seeds, data)


def _first_config(rows: list[dict], name: str, key: str) -> Any:
    """`key` of the first job's .hydra/<name> that has it (None when no job has)."""
    from omegaconf import OmegaConf

    from ..loading.safety import load_yaml_config

    for r in rows:
        path = Path(r["run"]) / ".hydra" / name
        if path.is_file():
            value = OmegaConf.select(load_yaml_config(path), key, default=None)
            if value is not None:
                return value
    return None


def claim_of(rows: list[dict]) -> dict | None:
    """The `claim:` of the preset a sweep's jobs were composed with (their .hydra/config.yaml)."""
    from omegaconf import OmegaConf

    claim = _first_config(rows, "config.yaml", "claim")
    return None if claim is None else OmegaConf.to_container(claim, resolve=False)  # type: ignore[return-value]


def dataset_of(rows: list[dict]) -> str:
    """What the sweep ran on: its jobs' dataset choice (.hydra/hydra.yaml), else the name of
    the composed dataset's loader (load_digits: digits); '' when neither is there."""
    choice = _first_config(rows, "hydra.yaml", "hydra.runtime.choices.dataset")
    if choice is not None:
        return str(choice)
    target = str(_first_config(rows, "config.yaml", "dataset._target_") or "")
    return target.rsplit(".", 1)[-1].removeprefix("load_")


def preset_of(rows: list[dict]) -> str:
    """The preset (experiment=...) the sweep's jobs were composed with; '' for none."""
    return str(_first_config(rows, "hydra.yaml", "hydra.runtime.choices.experiment") or "")


def _show(x: float, fraction: bool, sign: bool) -> str:
    """A number for a person: points (x 100) for a fraction, 3-4 figures, a true minus sign."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    v = x * 100 if fraction else x
    if abs(v) < 1e-9:  # a difference of equal floats, up to rounding: 0
        return "0"
    a = abs(v)
    if fraction:
        text = f"{a:.1f}"
    elif a >= 100:
        text = f"{a:.0f}"
    elif a >= 1:
        text = f"{a:.3g}" if a < 10 else f"{a:.1f}"
    else:
        text = f"{a:.3g}"
    if v < 0:
        return MINUS + text
    return ("+" if sign else "") + text


def table(verdict: Verdict) -> list[str]:
    """The comparisons as one markdown table: what must be true, the setting, measured,
    what was needed, the result."""
    out = [
        "| what must be true | setting | measured (mean [95 % interval]) | needed | result |",
        "|---|---|---|---|---|",
    ]
    for r in verdict.results:
        where = f"`{r.where()}`" if r.setting else "—"
        cells = [r.label, where, r.measured(), r.needed() if r.label != "the claim" else "—", r.outcome()]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def markdown(claim: dict, verdict: Verdict, figure: str | None, name: str = "", level: str = "") -> list[str]:
    """The claim's section: its header line, what it says, its figure, its table, the paper.
    `level` ('##') makes `name` a heading of its own above the header line."""
    lines = [f"{level} {name}", ""] if level and name else []
    header = f"{name} — {verdict.headline()}" if name else verdict.headline()
    lines += [f"**{header}**", "", f"**Claim.** {str(claim.get('says', '')).strip()}", ""]
    if figure:
        lines += [f"![{name or 'the claim'}: the claim's figure]({figure})", ""]
    lines += [*table(verdict), ""]
    if claim.get("published"):
        lines += [f"**Published.** {str(claim['published']).strip()}", ""]
    return lines
