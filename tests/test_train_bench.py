"""bench/train_results.py writes its table into README.md between markers, and touches nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("train_results", REPO / "bench" / "train_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_section_is_created_before_data_and_then_only_the_markers_change(tmp_path):
    b = _bench()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nintro\n\n## Data\n\nabout data\n")
    b.write_readme(readme, "| table v1 |")
    text = readme.read_text()
    assert text.index("## Results on real data") < text.index("## Data")
    assert f"{b.START}\n| table v1 |\n{b.END}" in text
    edited = text.replace("intro", "intro edited by hand")
    readme.write_text(edited)
    b.write_readme(readme, "| table v2 |")
    after = readme.read_text()
    assert "| table v1 |" not in after and "| table v2 |" in after
    assert after == edited.replace("| table v1 |", "| table v2 |")
    assert after.count("## Results on real data") == 1


def test_markdown_table_lists_every_variant_of_every_data_set():
    b = _bench()
    v = {"accuracy": 0.5, "macro_f1": 0.4, "minutes": 1.0}
    variants = ("image_only", "audio_only", "late_prod", "concat", "hdmf")
    results = {
        "date": "2026-01-01",
        "datasets": {
            "birds": {
                "recipe": "train/birds.yaml",
                "recipe_head": "late_prod",
                "test_examples": 40,
                "arch": {"audio_backbone": "a", "image_backbone": "i", "head": "late_prod"},
                "variants": {k: dict(v) for k in variants},
                "fusion_beats_best_single": {"late_prod": True, "concat": False, "hdmf": False},
            }
        },
    }
    md = b.markdown(results)
    for name in ("image only", "audio only", "late product (recipe)", "concat", "HD-MF"):
        assert f"| birds | 40 | {name} | 50.0 % | 0.400 | 1.0 |" in md
    assert "late product (recipe) yes, concat no, HD-MF no" in md
    # an entry written before recipe_head existed: its arch names the head
    old = results["datasets"]["birds"]
    old.pop("recipe_head")
    old["arch"]["head"] = "hdmf"
    assert "| birds | 40 | HD-MF (recipe) |" in b.markdown(results)
