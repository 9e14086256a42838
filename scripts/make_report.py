#!/usr/bin/env python
"""Assemble outputs/REPORT.md from the preset sweeps that scripts/reproduce_all.sh ran.

Each section is one preset sweep (`pdl-run -m experiment=<name>`): its claim, a table of the
swept settings and the metrics that speak to the claim (read from the sweep's summary.csv;
the full table with every metric stays in the sweep's summary.md), and its plots. The
README's tables are copied from this file.

    python scripts/make_report.py [SWEEPS_ROOT] [OUT]     # defaults: outputs/reproduce outputs/REPORT.md
    python scripts/make_report.py --readme README.md      # also rewrite the README's measured tables

The README's tables sit between `<!-- measured:start -->` and `<!-- measured:end -->` and are
the same tables as REPORT.md's (without the plots), so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

START, END = "<!-- measured:start -->", "<!-- measured:end -->"

# preset -> (claim, [(metric key, column title)])
PRESETS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "bn_ablation": (
        "A deep plain net trains with batch norm and stalls without it; without BN the gradient "
        "vanishes on its way to the first layer.",
        [
            ("test/acc", "test acc"),
            ("bn/grad_ratio_first_last", "grad first/last"),
            ("bn/act_std_last", "std of last layer's input"),
        ],
    ),
    "augmentation_study": (
        "Augmentation narrows the train-test gap on a small training set (150 digits).",
        [
            ("final/train_acc", "train acc"),
            ("test/acc", "test acc"),
            ("final/train_test_gap", "train-test gap"),
        ],
    ),
    "prune_sweep": (
        "Much of a network can be pruned with little loss in accuracy after fine-tuning; "
        "filter pruning makes it really smaller and faster.",
        [
            ("prune/acc_before", "acc dense"),
            ("prune/acc_pruned", "acc pruned"),
            ("prune/acc_finetuned", "acc fine-tuned"),
            ("prune/sparsity", "params removed"),
            ("prune/flops_share", "FLOPs left"),
            ("prune/latency_ratio", "latency b256 pruned/dense"),
            ("prune/ckpt_share", "checkpoint size left"),
        ],
    ),
    "adv_eps": (
        "Small input shifts break a standard model; adversarial training at the same eps "
        "defends, at a small cost in clean accuracy.",
        [
            ("test/acc", "clean acc"),
            ("adv/robust_acc/grad", "course grad step @eps"),
            ("adv/robust_acc/fgsm", "FGSM @eps"),
            ("adv/robust_acc/pgd", "PGD @eps"),
        ],
    ),
    "attention_length": (
        "Seq2seq forgets long inputs; attention and the Transformer do not (reverse task).",
        [("test/token_acc", "token acc"), ("test/seq_acc", "sequence acc")],
    ),
    "nas_vs_random": (
        "A searched DARTS cell does at least as well as a random one.",
        [
            ("test/acc", "test acc"),
            ("test/loss", "test loss"),
            ("params", "params"),
            ("nas/alpha_entropy_start", "alpha entropy start"),
            ("nas/alpha_entropy_end", "alpha entropy end"),
            ("nas/skip_count", "skip edges"),
        ],
    ),
}


def fmt(v: str) -> str:
    try:
        x = float(v)
    except ValueError:
        return v
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if abs(x) < 1e-3 else f"{x:.4f}".rstrip("0").rstrip(".")


def table(csv_path: Path, metrics: list[tuple[str, str]]) -> list[str]:
    rows = list(csv.DictReader(csv_path.open()))
    header = list(rows[0]) if rows else []
    axes = header[1 : header.index("status")] if "status" in header else []
    varying = [a for a in axes if len({r[a] for r in rows}) > 1]
    common = [f"{a}={rows[0][a]}" for a in axes if a not in varying and rows[0][a]]
    present = [(k, t) for k, t in metrics if k in header]
    out = [f"Common to every job: `{', '.join(common)}`", ""] if common else []
    titles = varying + ["status"] + [t for _, t in present]
    out += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in rows:
        cells = [r[a] for a in varying] + [r["status"]] + [fmt(r[k]) if r[k] else "" for k, _ in present]
        out.append("| " + " | ".join(cells) + " |")
    return out


def sections(root_p: Path, out_p: Path, plots: bool, level: str = "##") -> list[str]:
    lines: list[str] = []
    for name, (claim, metrics) in PRESETS.items():
        sweep = root_p / name
        lines += [f"{level} {name}", "", f"Claim: {claim}", "", f"`pdl-run -m experiment={name}`", ""]
        summary = sweep / "summary.csv"
        if not summary.is_file():
            lines += ["(not run)", ""]
            continue
        lines += table(summary, metrics) + [""]
        if plots:
            for png in sorted(sweep.glob("*.png")):
                lines += [f"![{name}]({os.path.relpath(png.resolve(), out_p.parent.resolve())})", ""]
    return lines


def timings_line(root_p: Path) -> list[str]:
    timings = root_p.parent / f"{root_p.name}.timings"
    if not timings.is_file():
        return []
    pairs = [ln.split("=") for ln in timings.read_text().split()]
    total = sum(int(v) for _, v in pairs)
    return [f"Wall time per preset (s): {', '.join(f'{k} {v}' for k, v in pairs)}; total {total} s.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="outputs/reproduce")
    ap.add_argument("out", nargs="?", default="outputs/REPORT.md")
    ap.add_argument("--readme", default=None, help="rewrite the measured section of this README")
    args = ap.parse_args()
    root_p, out_p = Path(args.root), Path(args.out)
    lines = [
        "# REPORT: the course's claims, measured",
        "",
        "Made by `scripts/reproduce_all.sh` on the bundled data. Each section is one preset",
        "sweep (`pdl-run -m experiment=<name>`); the full table with every metric is the",
        "sweep's summary.md.",
        "",
    ]
    lines += timings_line(root_p) + sections(root_p, out_p, plots=True)
    out_p.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_p}")
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"{readme}: no {START} ... {END} section to rewrite")
        body = ["", *timings_line(root_p), *sections(root_p, out_p, plots=False, level="###")]
        head, rest = text.split(START, 1)
        readme.write_text(head + START + "\n".join(body) + END + rest.split(END, 1)[1])
        print(f"rewrote the measured tables in {readme}")


if __name__ == "__main__":
    main()
