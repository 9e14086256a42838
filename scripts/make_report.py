#!/usr/bin/env python
"""Assemble outputs/REPORT.md from the preset sweeps that scripts/reproduce_all.sh ran."""

from __future__ import annotations

import sys
from pathlib import Path

CLAIMS = {
    "bn_ablation": "A deep plain net trains with batch norm and stalls without it.",
    "augmentation_study": "Augmentation narrows the train-test gap on a small training set.",
    "prune_sweep": "Much of a network can be pruned with little loss in accuracy.",
    "adv_eps": "Small input shifts break a standard model; adversarial training defends.",
    "attention_length": "Seq2seq forgets long inputs; attention and the Transformer do not.",
    "nas_vs_random": "A searched DARTS cell does at least as well as a random one.",
}


def main(root: str, out: str) -> None:
    root_p, out_p = Path(root), Path(out)
    lines = ["# REPORT: the course's claims, measured", "",
             "Made by `scripts/reproduce_all.sh` on the bundled data. Each section is one preset",
             "sweep (`pdl-run -m experiment=<name>`); the tables are its summary.md.", ""]
    for name, claim in CLAIMS.items():
        sweep = root_p / name
        lines += [f"## {name}", "", f"Claim: {claim}", ""]
        summary = sweep / "summary.md"
        if not summary.is_file():
            lines += ["(not run)", ""]
            continue
        lines += [summary.read_text().strip(), ""]
        for png in sorted(sweep.glob("*.png")):
            lines += [f"![{name}]({png.resolve().relative_to(out_p.parent.resolve())})", ""]
    out_p.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_p}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/reproduce",
         sys.argv[2] if len(sys.argv) > 2 else "outputs/REPORT.md")
