"""Class rules in post-processing (`runtime.postprocess.classes`): include / exclude lists, a per-class threshold and
minimum interval; every drop counted in the daemon's /metrics text."""

from __future__ import annotations

import types

import numpy as np
import pytest

from edgeav.errors import ConfigError
from edgeav.runtime.postprocess import PostProcessor
from edgeav.schema.runtime import PostprocessConfig

LABELS = ["robin", "wren", "crow"]
NS = 1_000_000_000


def _run(classes: dict, scores: list[list[float]]) -> tuple[PostProcessor, list]:
    cfg = PostprocessConfig(threshold=0.5, smoothing="none", confirm_hits=1, min_gap_s=0.0, classes=classes)
    post = PostProcessor(LABELS, cfg)
    dets = []
    for i, p in enumerate(scores):
        logits = np.log(np.asarray(p, dtype=np.float32))
        _, d = post.update(i * NS, (i + 1) * NS, {"logits": logits}, np.array([1.0, 1.0]))
        dets += d
    return post, dets


def test_include_exclude_threshold_and_interval() -> None:
    every_second = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]] * 4  # each class every 3 s, 12 s
    _, base = _run({}, every_second)
    assert [d.label for d in base] == LABELS * 4
    post, d = _run({"include": ["robin", "wren"]}, every_second)
    assert {x.label for x in d} == {"robin", "wren"} and post.class_rules.dropped[("crow", "include")] == 4
    post, d = _run({"exclude": ["wren"]}, every_second)
    assert {x.label for x in d} == {"robin", "crow"} and post.class_rules.dropped[("wren", "exclude")] == 4
    post, d = _run({"rules": {"crow": {"min_interval_s": 5.0}}}, every_second)
    crows = [x.end_ns // NS for x in d if x.label == "crow"]
    assert crows == [3, 9]  # 6 and 12 are within 5 s of the last one reported
    assert post.class_rules.dropped[("crow", "min_interval")] == 2
    post, d = _run({"rules": {"robin": {"threshold": 0.9}}}, every_second)  # robin scores 0.8: never reported
    assert "robin" not in {x.label for x in d} and len(d) == 8
    post, d = _run({"rules": {"wren": {"threshold": 0.3}}}, [[0.35, 0.4, 0.25]])  # under the default 0.5
    assert [x.label for x in d] == ["wren"]


def test_unknown_label_and_contradictions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown label"):
        _run({"include": ["eagle"]}, [])
    with pytest.raises(ValueError, match="both name"):
        PostprocessConfig(classes={"include": ["crow"], "exclude": ["crow"]})
    with pytest.raises(ValueError, match="both set a threshold"):
        PostprocessConfig(class_thresholds={"crow": 0.4}, classes={"rules": {"crow": {"threshold": 0.6}}})


def test_drops_and_thresholds_in_metrics() -> None:
    pytest.importorskip("prometheus_client", reason="the runtime extra (prometheus_client) is not installed")
    from edgeav.runtime.daemon_integrations import DaemonIntegrations
    from edgeav.runtime.metrics import DaemonMetrics

    m = DaemonMetrics()
    cfg = PostprocessConfig(
        threshold=0.5,
        smoothing="none",
        min_gap_s=0.0,
        classes={"exclude": ["wren"], "rules": {"crow": {"threshold": 0.7, "min_interval_s": 10}}},
    )
    post = PostProcessor(LABELS, cfg)
    DaemonIntegrations._wire_class_rules(types.SimpleNamespace(metrics=m), post)
    for i, p in enumerate([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]]):
        post.update(i * NS, (i + 1) * NS, {"logits": np.log(np.asarray(p, np.float32))}, np.array([1.0, 1.0]))
    text = m.render()[0].decode()
    assert 'edgeav_class_rule_dropped_total{label="wren",rule="exclude"} 2.0' in text
    assert 'edgeav_class_rule_dropped_total{label="crow",rule="min_interval"} 1.0' in text
    assert 'edgeav_class_threshold{label="crow"} 0.699999988079071' in text  # float32 of 0.7
    assert 'edgeav_class_threshold{label="robin"} 0.5' in text


def test_older_keys_are_class_rules() -> None:
    """`class_thresholds` and `ignore_labels` (configs written before `classes`) are the same mechanism: a threshold
    rule and an exclude, so the drops of an ignored label are counted like any other class rule's."""
    cfg = PostprocessConfig(class_thresholds={"crow": 0.4}, ignore_labels=["wren"], classes={"exclude": ["finch"]})
    assert cfg.classes.rules["crow"].threshold == 0.4 and cfg.classes.exclude == ["finch", "wren"]
