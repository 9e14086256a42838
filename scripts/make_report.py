#!/usr/bin/env python
"""Assemble outputs/REPORT.md from the preset sweeps that scripts/reproduce_all.sh ran.

Each section is one preset sweep (`pdl-run -m experiment=<name>`) and the claim it states
(its `claim:` in configs/experiment/<name>.yaml): one figure with error bars over the seeds,
the verdict from the paired per-seed differences and their 95 % t-intervals
(pdl_experiments/sweeps/claims.py), the published number beside ours, and the settings'
means. A second column judges the same claims on real MNIST digits (`dataset=mnist5k`) when
reproduce_all.sh ran that part too.

    python scripts/make_report.py [SWEEPS_ROOT] [OUT]      # outputs/reproduce outputs/REPORT.md
    python scripts/make_report.py --mnist5k outputs/reproduce_mnist5k
    python scripts/make_report.py --readme README.md       # also the README's measured section

The README's section sits between `<!-- measured:start -->` and `<!-- measured:end -->`; its
figures are copied to docs/figures/ (the README is read where outputs/ is not).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pdl_experiments.sweeps import claims
from pdl_experiments.sweeps.claim_figure import draw
from pdl_experiments.sweeps.summary import collect, find_runs

START, END = "<!-- measured:start -->", "<!-- measured:end -->"
PRESETS = [
    "bn_ablation",
    "augmentation_study",
    "prune_sweep",
    "adv_eps",
    "gan_losses",
    "attention_length",
    "nas_vs_random",
]


def rows_of(sweep: Path) -> list[dict]:
    return collect(find_runs([sweep])) if (sweep / "multirun.yaml").is_file() else []


def judged(sweep: Path, figure: Path | None) -> tuple[dict | None, claims.Verdict, Path | None, list[dict]]:
    """The sweep's claim, its verdict, its figure (drawn to `figure`) and its jobs."""
    rows = rows_of(sweep)
    claim = claims.claim_of(rows) if rows else None
    if claim is None:
        return None, claims.Verdict("not run", []), None, rows
    verdict = claims.judge(claim, rows)
    return claim, verdict, draw(claim, rows, figure) if figure else None, rows


def on_mnist5k(rows: list[dict]) -> bool:
    """Whether the sweep's jobs ran on dataset=mnist5k (augmentation_study does by default)."""
    if not rows:
        return False
    import yaml

    config = Path(rows[0]["run"]) / ".hydra" / "config.yaml"
    target = (
        (yaml.safe_load(config.read_text()) or {}).get("dataset", {}).get("_target_", "")
        if config.is_file()
        else ""
    )
    return "mnist5k" in str(target)


def fixed_overrides(rows: list[dict]) -> list[str]:
    """The overrides every job of a sweep shares (dataset=mnist5k, its shrinking, a seed list
    given on the command line shows as the seed axis instead), in the order of the first job."""
    skip = ("experiment", "trainer.progress", "trainer.num_threads", "seed")
    first = rows[0]["overrides"] if rows else {}
    return [
        f"{k}={v}"
        for k, v in first.items()
        if not k.startswith(("hydra", *skip)) and all(r["overrides"].get(k) == v for r in rows)
    ]


def short(verdict: claims.Verdict) -> str:
    if verdict.status == "not run":
        return "not run"
    if verdict.status == claims.HOLDS:
        return f"holds ({verdict.seeds} seeds)"
    if verdict.status == claims.INCOMPLETE:
        return "incomplete"
    held = sum(r.verdict == claims.HOLDS for r in verdict.results)
    return f"does not hold here ({held} of {len(verdict.results)} comparisons hold)"


def settings_table(claim: dict, rows: list[dict]) -> list[str]:
    """Mean ± ci95 over seeds of the metrics the claim compares, per setting."""
    from pdl_experiments.sweeps.seeds import summarise

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


def sections(root: Path, mnist: Path | None, figures: Path, rel_to: Path, readme: bool) -> list[str]:
    overview = ["| preset | claim | digits | mnist5k |", "|---|---|---|---|"]
    body: list[str] = []
    level = "###" if readme else "##"
    for name in PRESETS:
        claim, verdict, png, rows = judged(root / name, figures / f"{name}.png")
        m_claim, m_verdict, m_png, m_rows = (
            judged(mnist / name, None if readme else figures / f"{name}_mnist5k.png")
            if mnist
            else (None, claims.Verdict("not run", []), None, [])
        )
        says = str((claim or m_claim or {}).get("says", "")).strip()
        if on_mnist5k(rows) and m_claim is None:  # the preset itself runs on mnist5k
            overview.append(f"| `{name}` | {says} | (runs on mnist5k) | {short(verdict)} |")
        else:
            overview.append(f"| `{name}` | {says} | {short(verdict)} | {short(m_verdict)} |")
        body += [f"{level} {name}", "", f"`pdl-run -m experiment={name}`", ""]
        if claim is None:
            body += ["(not run)", ""]
            continue
        link = os.path.relpath(png, rel_to) if png else None
        data = "mnist5k" if on_mnist5k(rows) else "digits"
        body += claims.markdown(claim, verdict, link, where=f"{data}, {verdict.seeds} seeds")
        if m_claim is not None:
            body += [
                f"**On mnist5k** (`pdl-run -m experiment={name} {' '.join(fixed_overrides(m_rows))}`): "
                f"{m_verdict.headline()}",
                "",
            ]
            body += [f"- {r.line()}" for r in m_verdict.results] + [""]
            if m_png and not readme:
                body += [f"![{name} on mnist5k]({os.path.relpath(m_png, rel_to)})", ""]
        if not readme:
            body += ["<details><summary>means over seeds per setting</summary>", ""]
            body += settings_table(claim, rows) + ["", "</details>", ""]
    return [*overview, "", *body]


def timings_line(root: Path) -> list[str]:
    lines = []
    for path in (root.parent / f"{root.name}.timings", root.parent / f"{root.name}_mnist5k.timings"):
        if path.is_file():
            pairs = [ln.split("=") for ln in path.read_text().split()]
            total = sum(int(v) for _, v in pairs)
            what = "mnist5k part" if "mnist5k" in path.name else "digits"
            lines.append(
                f"Wall time per preset, {what} (s): {', '.join(f'{k} {v}' for k, v in pairs)}; total {total} s."
            )
    return [*lines, ""] if lines else []


HEADER = """# REPORT: the course's claims, measured

Made by `scripts/reproduce_all.sh`. Each section is one preset sweep
(`pdl-run -m experiment=<name>`) and the claim its preset states. Every setting runs the same
seeds; a comparison is judged on the per-seed paired difference: its mean and 95 % Student-t
interval. A claim **holds** when every one of its comparisons' intervals lies wholly beyond
its margin (or, for an equivalence, inside its bound); **does not hold here** otherwise, with
the numbers; **incomplete** when a job it needs failed (named). A diverged run counts as
chance accuracy. Figures: mean ± 95 % interval over the seeds per setting.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="outputs/reproduce")
    ap.add_argument("out", nargs="?", default="outputs/REPORT.md")
    ap.add_argument(
        "--mnist5k", default=None, help="the sweeps of the mnist5k part (reproduce_all.sh --mnist5k)"
    )
    ap.add_argument("--readme", default=None, help="rewrite the measured section of this README")
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    mnist = Path(args.mnist5k) if args.mnist5k else (root.parent / f"{root.name}_mnist5k")
    mnist = mnist if mnist.is_dir() else None
    figures = out.parent / "report"
    lines = [HEADER, *timings_line(root), *sections(root, mnist, figures, out.parent, readme=False)]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} (figures in {figures})")
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"{readme}: no {START} ... {END} section to rewrite")
        shipped = readme.parent / "docs" / "figures"  # the digits figures, drawn again there
        body = ["", *timings_line(root), *sections(root, mnist, shipped, readme.parent, readme=True)]
        head, rest = text.split(START, 1)
        readme.write_text(head + START + "\n".join(body) + END + rest.split(END, 1)[1])
        print(f"rewrote the measured section of {readme}; figures in {shipped}")


if __name__ == "__main__":
    main()
