"""Class rules of post-processing (`runtime.postprocess.classes`): which classes are reported at all (include /
exclude) and how often (a per-class minimum interval); per-class thresholds go into the PostProcessor's threshold
vector (a class's windows must score over its own threshold to count as hits).

Applied to confirmed detections, in time order, after the PostProcessor's own confirmation and gap: a dropped
detection is counted by (label, rule) in `dropped` and handed to `on_drop` (the daemon's /metrics counter
`edgeav_class_rule_dropped_total`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from edgeav.errors import ConfigError
from edgeav.timebase import s_to_ns

if TYPE_CHECKING:
    from edgeav.runtime.postprocess import Detection
    from edgeav.schema.integrations import ClassRulesConfig

log = logging.getLogger(__name__)

RULES = ("include", "exclude", "min_interval")


class ClassRules:
    def __init__(self, labels: Sequence[str], cfg: ClassRulesConfig) -> None:
        self.cfg = cfg
        unknown = (set(cfg.include) | set(cfg.exclude) | set(cfg.rules)) - set(labels)
        if unknown:
            raise ConfigError(
                f"runtime.postprocess.classes names unknown label(s) {sorted(unknown)}; labels: {list(labels)}"
            )
        self.include = set(cfg.include)
        self.exclude = set(cfg.exclude)
        self.min_interval_ns = {lb: s_to_ns(r.min_interval_s) for lb, r in cfg.rules.items() if r.min_interval_s > 0}
        self.thresholds = {lb: r.threshold for lb, r in cfg.rules.items() if r.threshold is not None}
        self._last_end: dict[str, int] = {}  # label -> end_ns of its last reported detection
        self.dropped: collections.Counter[tuple[str, str]] = collections.Counter()
        self.on_drop: Callable[[str, str], None] | None = None

    def _rule_against(self, det: Detection) -> str | None:
        if self.include and det.label not in self.include:
            return "include"
        if det.label in self.exclude:
            return "exclude"
        gap = self.min_interval_ns.get(det.label)
        last = self._last_end.get(det.label)
        if gap is not None and last is not None and det.end_ns - last < gap:
            return "min_interval"
        return None

    def keep(self, det: Detection) -> bool:
        """Whether the rules report `det`; a dropped one is counted (and logged at DEBUG)."""
        rule = self._rule_against(det)
        if rule is None:
            self._last_end[det.label] = det.end_ns
            return True
        self.dropped[(det.label, rule)] += 1
        log.debug("detection %s %.3f dropped by class rule %s", det.label, det.confidence, rule)
        if self.on_drop is not None:
            self.on_drop(det.label, rule)
        return False


__all__ = ["ClassRules", "RULES"]
