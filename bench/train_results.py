"""Results on real data: image only, audio only and each fusion head on GRID and on the birds, trained on this CPU.

Two-phase training makes the variants cheap: one run of each recipe (`train/grid.yaml`: HD-MF head;
`train/birds.yaml`: BirdNET V2.4 frozen + the photo base model's picture branch, late-product head) trains the
unimodal models (phase I: their test accuracy through the modality mask is "audio only" and "image only") and the
recipe's fusion on their frozen, cached features (phase II); then concat and HD-MF (those of them that are not the
recipe's head) are trained on the same unimodal models (`train.phase1_from`). Minutes per variant are the training
time of what that variant needs: audio only = phase I audio; image only = phase I image; a fusion = both phase I
models + computing the cache + its phase II.

    python bench/train_results.py [--datasets grid,birds] [--data ../shared/data] [--out runs/bench_train]
                                  [--recipe-run birds=runs/birds_final]   # reuse a finished run of the recipe
                                  [--set model.image_weights_path=runs/birds_base/best.pt]
    python bench/train_results.py --only birdnet                          # only the birds' BirdNET-alone row

Birds also get a "BirdNET V2.4 alone" row (bench/birdnet_alone.py: BirdNET's own logits restricted to the 17
species, on the recipe's test windows; nothing trained here), where BirdNET is converted on this machine.

Writes bench/results/train_results.json, prints one line per data set, and puts a Markdown table into README.md
between <!-- train-results:start --> and <!-- train-results:end --> (creating a "## Results on real data" section
before "## Data" when the markers are absent).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- train-results:start -->", "<!-- train-results:end -->"
RECIPES = {"grid": "train/grid.yaml", "birds": "train/birds.yaml"}
FUSION_HEADS = ("concat", "hdmf")  # trained over the recipe's phase I models besides the recipe's own head
HEAD_NAMES = {"concat": "concat", "hdmf": "HD-MF", "late_prod": "late product"}


def _phase_minutes(metrics_csv: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(metrics_csv, newline="") as f:
        for r in csv.DictReader(f):
            out[r["phase"]] = out.get(r["phase"], 0.0) + float(r["seconds"]) / 60
    return out


def run_dataset(
    name: str, data: Path, out: Path, extra_sets: list[str], base_run: Path | None = None
) -> dict[str, Any]:
    """Train the recipe as it is (or, with `base_run`, take that finished two_phase run of it: its
    train_report.json, metrics.csv and unimodal checkpoints), then train each other fusion head of FUSION_HEADS on
    the same phase I models (`train.phase1_from`)."""
    from edgeav.schema import load_config
    from edgeav.train.loop import train

    recipe = REPO / RECIPES[name]
    t0 = time.monotonic()
    if base_run is None:
        base_run = out / "recipe"
        base = train(load_config(recipe, list(extra_sets)), data, base_run)
    else:
        base = json.loads((base_run / "train_report.json").read_text())
    t1 = time.monotonic()
    recipe_head = base["arch"]["head"]
    runs = {recipe_head: (base_run, base)}
    for head in FUSION_HEADS:
        if head != recipe_head:
            runs[head] = (
                out / head,
                train(
                    load_config(recipe, [f"model.head={head}", f"train.phase1_from={base_run}", *extra_sets]),
                    data,
                    out / head,
                ),
            )
    t2 = time.monotonic()
    m_base = _phase_minutes(base_run / "metrics.csv")
    phase1 = m_base.get("phase1_audio", 0.0) + m_base.get("phase1_image", 0.0)
    t = base["test"]
    rows: dict[str, dict[str, Any]] = {
        "image_only": {**t["image_only"], "minutes": m_base.get("phase1_image", 0.0), "from": "phase I image model"},
        "audio_only": {**t["audio_only"], "minutes": m_base.get("phase1_audio", 0.0), "from": "phase I audio model"},
    }
    for head, (run_dir, report) in runs.items():
        phase2 = _phase_minutes(run_dir / "metrics.csv").get("phase2_fusion", 0.0)
        rows[head] = {
            **report["test"]["both"],
            "minutes": phase1 + report.get("phase2_cache_seconds", 0.0) / 60 + phase2,
            "from": f"phase II {head} head on the phase I models"
            + (" (the recipe's head)" if head == recipe_head else ""),
        }
    for r in rows.values():
        r["minutes"] = round(r["minutes"], 2)
    best_single = max(rows["image_only"]["accuracy"], rows["audio_only"]["accuracy"])
    return {
        "data": str(data),
        "recipe": RECIPES[name],
        "recipe_head": recipe_head,
        "model": base["model"],
        "arch": base["arch"],
        "test_examples": t["n"],
        "splits": base["splits"],
        "variants": rows,
        "fusion_beats_best_single": {h: rows[h]["accuracy"] > best_single for h in runs},
        "wall_minutes": {
            "recipe_run": round((t1 - t0) / 60, 2) if t1 - t0 > 1 else None,
            "other_heads": round((t2 - t1) / 60, 2),
        },
        "recipe_run": str(base_run),
        "checkpoints": {h: str(run_dir / "best.pt") for h, (run_dir, _) in runs.items()},
    }


def birdnet_row(data: Path) -> dict[str, Any] | None:
    """bench/birdnet_alone.py's result on the birds recipe's test windows, or None (logged) without BirdNET."""
    sys.path.insert(0, str(REPO / "bench"))
    import birdnet_alone

    from edgeav.train.models.birdnet import birdnet_missing

    reason = birdnet_missing()
    if reason is not None:
        logging.getLogger("bench").warning("no BirdNET-alone row: %s", reason)
        return None
    r = birdnet_alone.run(REPO / RECIPES["birds"], data)
    print(birdnet_alone.one_line(r), flush=True)
    return {k: v for k, v in r.items() if k not in ("confusion", "classes")}


def _variant_name(r: dict[str, Any], variant: str) -> str:
    if variant in ("image_only", "audio_only"):
        return variant.replace("_", " ")
    name = HEAD_NAMES.get(variant, variant)
    return f"{name} (recipe)" if variant == r.get("recipe_head", r["arch"]["head"]) else name


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Test accuracy and macro-F1 of models trained on this machine's CPU (2 cores, shared) by "
        f"`python bench/train_results.py` ({results['date']}); GRID from scratch, birds from BirdNET V2.4 "
        f"(frozen) and the bird-photo base model. Minutes: training time of what the variant needs (two-phase: "
        f"a fusion needs both unimodal models).",
        "",
        "| data set | test examples | variant | accuracy | macro-F1 | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for ds, r in results["datasets"].items():
        for v, x in r["variants"].items():
            lines.append(
                f"| {ds} | {r['test_examples']} | {_variant_name(r, v)} | {100 * x['accuracy']:.1f} % | "
                f"{x['macro_f1']:.3f} | {x['minutes']:.1f} |"
            )
        if r.get("birdnet_alone"):
            b = r["birdnet_alone"]
            lines.append(
                f"| {ds} | {b['test_windows']} | BirdNET V2.4 alone (restricted to the species; not trained "
                f"here) | {100 * b['accuracy']:.1f} % | {b['macro_f1']:.3f} | - |"
            )
    lines.append("")
    for ds, r in results["datasets"].items():
        beats = ", ".join(
            f"{_variant_name(r, h)} {'yes' if ok else 'no'}" for h, ok in r["fusion_beats_best_single"].items()
        )
        lines.append(
            f"- {ds}: `{r['recipe']}` ({r['arch']['audio_backbone']} + {r['arch']['image_backbone']}); "
            f"fusion beats the best single modality: {beats}." + (f" {r['note']}" if r.get("note") else "")
        )
        if r.get("birdnet_alone"):
            b, w = r["birdnet_alone"], r["birdnet_alone"]["windows"]
            k = w["birdnet_chunks_per_window"]
            lines.append(
                f"- {ds}, BirdNET V2.4 alone (`bench/birdnet_alone.py`, {b['licence'].split(' (')[0]}): the "
                f"recipe's {b['test_windows']} {w['window_s']:g} s test windows with audio"
                + (f", each scored as {k} chunks of 3 s (confidences averaged)" if k > 1 else "")
                + f"; per recording {100 * b['per_recording']['accuracy']:.1f} % "
                f"({b['per_recording']['recordings']} test recordings)."
            )
    return "\n".join(lines)


def write_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    block = f"{START}\n{table}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        section = f"## Results on real data\n\n{block}\n\n"
        if "\n## Data" in text:
            i = text.index("\n## Data") + 1
            text = text[:i] + section + text[i:]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, readme)


def _write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="grid,birds")
    p.add_argument("--data", default=os.environ.get("EDGEAV_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=str(REPO / "runs" / "bench_train"))
    p.add_argument("--results", default=str(REPO / "bench" / "results" / "train_results.json"))
    p.add_argument("--readme", default=str(REPO / "README.md"))
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra config override for every run")
    p.add_argument("--note", action="append", default=[], metavar="DATASET=TEXT", help="a note printed under the table")
    p.add_argument(
        "--only",
        choices=["birdnet"],
        default=None,
        help="birdnet: only the birds' BirdNET-alone row (into the existing results and table)",
    )
    p.add_argument(
        "--recipe-run",
        action="append",
        default=[],
        metavar="DATASET=DIR",
        help="take this finished two_phase run of the recipe instead of training one (e.g. birds=runs/birds_final)",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in a.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        sys.stderr.write(f"unknown data set(s) {unknown}; known: {', '.join(RECIPES)}\n")
        return 2
    results_path = Path(a.results)
    if a.only == "birdnet":
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
        if "birds" not in results.get("datasets", {}):
            sys.stderr.write(f"--only birdnet: {results_path} has no birds results to add the row to\n")
            return 2
        row = birdnet_row(Path(a.data) / "birds")
        if row is None:
            return 2
        results["datasets"]["birds"]["birdnet_alone"] = row
        _write_results(results_path, results)
        write_readme(Path(a.readme), markdown(results))
        return 0
    given = dict(x.split("=", 1) for x in a.recipe_run)
    for name in names:
        r = run_dataset(
            name, Path(a.data) / name, Path(a.out) / name, a.sets, Path(given[name]) if name in given else None
        )
        print(
            f"{name}: "
            + ", ".join(
                f"{_variant_name(r, v)} {100 * x['accuracy']:.1f}% (F1 {x['macro_f1']:.3f}, {x['minutes']:.1f} min)"
                for v, x in r["variants"].items()
            )
            + f" on {r['test_examples']} test examples",
            flush=True,
        )
        # merge into what is on disk now (another data set may have been written meanwhile), write, then the table
        results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
        notes = dict(x.split("=", 1) for x in a.note)
        if name in notes:
            r["note"] = notes[name]
        if name == "birds":
            r["birdnet_alone"] = birdnet_row(Path(a.data) / name)
        results.setdefault("datasets", {})[name] = r
        results["date"] = time.strftime("%Y-%m-%d", time.gmtime())
        results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
        _write_results(results_path, results)
        write_readme(Path(a.readme), markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
