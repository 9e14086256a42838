#!/usr/bin/env python
"""Write the results of the preset sweeps that scripts/reproduce_all.sh ran, as tables.

Each preset sweep (`pdl-run -m experiment=<name>`, into SWEEPS_ROOT/<name>) states its claim
(`claim:` in configs/experiment/<name>.yaml). Its section: a header line ("bn_ablation —
holds on digits, 16 of 16 comparisons, seeds 0-4"), what the claim says, its figure (mean ±
95 % interval over the seeds per setting), one table of its paired comparisons (what must be
true, the setting, measured, what was needed, the result: pdl_experiments/sweeps/claims.py),
the published number beside ours, and the means per setting. The claim judged is the one
the sweep's jobs were composed with; `--preset-claims` judges by the one
configs/experiment/<name>.yaml states now (a claim revised after its sweep, on the same runs).

A digits preset `X` pairs with `X_mnist5k` (the same claim on real MNIST digits) when that
sweep is there; which column a sweep's verdict goes in comes from the dataset in its own
config, so augmentation_study (run on mnist5k itself) lands in the real-digits column and
attention_length (on reverse, no image data) says so. A sweep that is missing says "not run".

    python scripts/make_report.py [SWEEPS_ROOT] [OUT]   # outputs/reproduce outputs/REPORT.md
    python scripts/make_report.py --readme README.md   # also the README's claims table

It writes OUT (figures beside it in report/) and the docs site's results page, docs/results.md
(figures in docs/figures/; `--docs ''` skips it). With --readme, the compact claims table
between `<!-- claims:start -->` and `<!-- claims:end -->`: one row per preset, each verdict
linking to its section of docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pdl_experiments.sweeps import claims
from pdl_experiments.sweeps.claim_figure import draw
from pdl_experiments.sweeps.seeds import summarise
from pdl_experiments.sweeps.summary import collect, find_runs

START, END = "<!-- claims:start -->", "<!-- claims:end -->"
REPO = Path(__file__).resolve().parents[1]
REAL = "mnist5k"  # the real digits' dataset: its own column
# (technique, preset on the bundled data); `<preset>_mnist5k` is its real-digits twin
PRESETS = [
    ("bn", "bn_ablation"),
    ("augmentation", "augmentation_study"),
    ("prune", "prune_sweep"),
    ("adv", "adv_eps"),
    ("gan", "gan_losses"),
    ("attention", "attention_length"),
    ("nas", "nas_vs_random"),
]


@dataclass
class Sweep:
    """One preset sweep's jobs, claim, verdict and figure."""

    name: str  # its directory under the sweeps root
    rows: list[dict] = field(default_factory=list)
    claim: dict | None = None
    verdict: claims.Verdict = field(default_factory=lambda: claims.Verdict(claims.NOT_RUN, []))
    figure: Path | None = None

    @property
    def ran(self) -> bool:
        return self.claim is not None

    @property
    def real(self) -> bool:
        return self.verdict.dataset == REAL


def load(root: Path, name: str, figures: Path, preset_claims: bool = False) -> Sweep:
    """The sweep root/name judged, its figure drawn into `figures`; 'not run' when absent."""
    sweep = Sweep(name)
    if not (root / name / "multirun.yaml").is_file():
        return sweep
    try:
        sweep.rows = collect(find_runs([root / name]))
        now = preset_claim(name) if preset_claims else None  # {} when there is no such preset
        sweep.claim = (now or claims.claim_of(sweep.rows)) if sweep.rows else None
        if sweep.claim is not None:
            sweep.verdict = claims.judge(sweep.claim, sweep.rows)
            sweep.figure = draw(sweep.claim, sweep.rows, figures / f"{name}.png")
    except Exception as e:  # one unreadable sweep must not cost the others' report
        print(f"{root / name}: not reported ({type(e).__name__}: {e})", file=sys.stderr)
        return Sweep(name)
    return sweep


def fixed_overrides(rows: list[dict]) -> list[str]:
    """The overrides every job of a sweep shares beyond its preset (a shrunk run's settings),
    in the order of the first job."""
    skip = ("experiment", "trainer.progress", "trainer.num_threads", "seed")
    first = rows[0]["overrides"] if rows else {}
    return [
        f"{k}={v}"
        for k, v in first.items()
        if not k.startswith(("hydra", *skip)) and all(r["overrides"].get(k) == v for r in rows)
    ]


def short(sweep: Sweep) -> str:
    """A verdict in a word or three (the overview tables)."""
    v = sweep.verdict
    if v.status == claims.NOT_RUN:
        return v.status
    if v.status == claims.INCOMPLETE:
        return "incomplete"
    held = sum(r.verdict == claims.HOLDS for r in v.results)
    seeds = f", {len(v.seeds)} seeds" if v.seeds else ""
    if v.status == claims.HOLDS:
        return f"holds ({held} of {len(v.results)}{seeds})"
    return f"does not hold ({held} of {len(v.results)} hold{seeds})"


def settings_table(claim: dict, rows: list[dict]) -> list[str]:
    """Mean ± ci95 over seeds of the metrics the claim compares, per setting."""
    chance = {str(k): float(v) for k, v in (claim.get("chance") or {}).items()}
    metrics = list(dict.fromkeys(str(c.get("metric")) for c in claim.get("compare") or [] if c.get("metric")))
    axes = list(claims.varying_axes(rows))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["overrides"].get(a, "") for a in axes), []).append(r)
    out = [
        "| " + " | ".join([*axes, "seeds", *metrics]) + " |",
        "|" + "---|" * (len(axes) + 1 + len(metrics)),
    ]
    for key, members in groups.items():
        cells = list(key) + [str(len(members))]
        for m in metrics:
            values = [v for r in members if (v := claims.value_of(r, m, chance)) is not None]
            mean, _, ci = summarise(values) if values else (float("nan"), 0.0, float("nan"))
            cells.append(f"{mean:.4g} ± {ci:.2g}" if values else "—")
        out.append("| " + " | ".join(cells) + " |")
    return out


def preset_claim(preset: str) -> dict:
    """The claim configs/experiment/<preset>.yaml states ({} when there is none)."""
    import yaml

    path = REPO / "configs" / "experiment" / f"{preset}.yaml"
    loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
    return dict((loaded or {}).get("claim") or {})


def overview(pairs: list[tuple[str, str, list[Sweep]]], link: str) -> list[str]:
    """One row per preset: technique, preset, the claim in a few words, the verdict on the
    bundled data and on real digits, each linking to `link#<sweep>`."""
    out = [
        "| technique | preset | claim | digits | real digits (mnist5k) |",
        "|---|---|---|---|---|",
    ]
    for technique, preset, sweeps in pairs:
        ran = [s for s in sweeps if s.ran]
        claim = next((s.claim for s in ran if s.claim and s.claim.get("short")), None) or preset_claim(preset)
        says = str(claim.get("short") or claim.get("says") or "").strip()
        cell = lambda s: f"[{short(s)}]({link}#{s.name})"
        bundled = [s for s in ran if not s.real]
        real = [s for s in ran if s.real]
        first = ", ".join(
            cell(s) + ("" if s.verdict.dataset == "digits" else f" (on {s.verdict.dataset})") for s in bundled
        )
        if not first and any(s.name == preset for s in real):  # the preset itself runs on real digits
            first = f"— (runs on {REAL})"
        image = any(s.verdict.dataset in ("digits", REAL) for s in ran) or not ran
        second = ", ".join(cell(s) for s in real) or ("not run" if image else "— (no image data)")
        out.append(f"| {technique} | `{preset}` | {says} | {first or 'not run'} | {second} |")
    return out


def sections(pairs: list[tuple[str, str, list[Sweep]]], figures: Path, page: Path) -> list[str]:
    """Every sweep's section; figures linked relative to the page (copied there if apart)."""
    body: list[str] = []
    for _, preset, sweeps in pairs:
        for s in sweeps:
            written = (REPO / "configs" / "experiment" / f"{s.name}.yaml").is_file()
            if not s.ran and s.name != preset and not written:  # no such twin preset: no section
                continue
            if not s.ran:
                body += [f"## {s.name}", "", f"`pdl-run -m experiment={s.name}`: not run.", ""]
                continue
            assert s.claim is not None
            link = None
            if s.figure is not None:
                shown = figures / s.figure.name
                if shown.resolve() != s.figure.resolve():
                    figures.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(s.figure, shown)
                link = os.path.relpath(shown, page.parent).replace(os.sep, "/")
            body += claims.markdown(s.claim, s.verdict, link, name=s.name, level="##")
            preset_name = claims.preset_of(s.rows) or s.name
            command = " ".join(["pdl-run -m", f"experiment={preset_name}", *fixed_overrides(s.rows)])
            body += [f"Run: `{command}`", ""]
            body += ["<details><summary>means over seeds per setting</summary>", ""]
            body += [*settings_table(s.claim, s.rows), "", "</details>", ""]
    return body


def timings_line(root: Path) -> list[str]:
    lines = []
    for path in (root.parent / f"{root.name}.timings",):
        if path.is_file():
            pairs = [ln.split("=", 1) for ln in path.read_text().split()]
            total = sum(int(v) for _, v in pairs)
            lines.append(
                f"Wall time per preset (s): {', '.join(f'{k} {v}' for k, v in pairs)}; total {total} s."
            )
    return [*lines, ""] if lines else []


HEADER = """# Results: the course's claims, measured

Made by `scripts/make_report.py` from the preset sweeps `scripts/reproduce_all.sh` ran. Each
section is one preset sweep (`pdl-run -m experiment=<name>`) and the claim its preset states.
Every setting runs the same seeds; a comparison is judged on the per-seed paired difference:
its mean and 95 % Student-t interval. A claim **holds** when every comparison's interval lies
wholly beyond what was needed (above a margin, below a bound, or within ±a bound for an
equivalence); **does not hold** otherwise, with the numbers; **incomplete** when a job it
needs failed (named). A diverged run counts as chance accuracy. Accuracies read in per cent
(one setting) or percentage points (a difference); figures show the mean ± 95 % interval over
the seeds per setting.
"""


def page(root: Path, pairs: list, figures: Path, out: Path) -> str:
    """A whole results page (REPORT.md or docs/results.md), figures linked from `out`."""
    lines = [HEADER, *timings_line(root), *overview(pairs, ""), "", *sections(pairs, figures, out)]
    return "\n".join(lines).rstrip() + "\n"


def write_readme(readme: Path, pairs: list, docs_page: str) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} section to rewrite; add the two markers")
    head, rest = text.split(START, 1)
    table = "\n".join(overview(pairs, docs_page))
    readme.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")
    print(f"rewrote the claims table of {readme}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="outputs/reproduce")
    ap.add_argument("out", nargs="?", default="outputs/REPORT.md")
    ap.add_argument(
        "--docs", default=str(REPO / "docs" / "results.md"), help="the docs site's results page ('' for none)"
    )
    ap.add_argument("--readme", default=None, help="rewrite the claims table of this README")
    ap.add_argument(
        "--preset-claims",
        action="store_true",
        help="judge each sweep by the claim configs/experiment/<name>.yaml states now, not the one "
        "its jobs were composed with (a claim revised after its sweep, judged on the same runs)",
    )
    args = ap.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    drawn = out.parent / "report"
    pairs = [
        (
            technique,
            preset,
            [load(root, name, drawn, args.preset_claims) for name in (preset, f"{preset}_{REAL}")],
        )
        for technique, preset in PRESETS
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(root, pairs, drawn, out))
    print(f"wrote {out} (figures in {drawn})")
    if args.docs:
        docs = Path(args.docs)
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(page(root, pairs, docs.parent / "figures", docs))
        print(f"wrote {docs} (figures in {docs.parent / 'figures'})")
    if args.readme:
        readme = Path(args.readme)
        link = os.path.relpath(args.docs or REPO / "docs" / "results.md", readme.parent).replace(os.sep, "/")
        write_readme(readme, pairs, link)


if __name__ == "__main__":
    main()
