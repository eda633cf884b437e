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
    results = {"date": "2026-01-01", "datasets": {"grid": {
        "recipe": "train/grid.yaml", "test_examples": 40, "arch": {"audio_backbone": "a", "image_backbone": "i"},
        "variants": {k: dict(v) for k in b.VARIANTS}, "fusion_beats_best_single": {"concat": False, "hdmf": True}}}}
    md = b.markdown(results)
    for name in ("image only", "audio only", "concat", "HD-MF"):
        assert f"| grid | 40 | {name} | 50.0 % | 0.400 | 1.0 |" in md
    assert "concat no, HD-MF yes" in md
