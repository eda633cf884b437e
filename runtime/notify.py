"""Notifications with rules (`daemon.notify`), sent through Apprise (extra `notify`) by a thread of their own.

The main loop only calls `Notifier.submit(...)`: an append to a bounded deque (a full one drops the newest, counted)
that the sending thread polls every 50 ms - no lock and no thread wake-up on the main loop (a Queue's condition
variable cost ~40 us there) - so a notification target that is slow or down never delays a detection. The thread decides whether the
detection is news by its class's rule (`NotifyRule`: minimum confidence, a cooldown, the first of the local day, a
rare class: fewer than N detections in the last D days) and sends one message per target URL, each retried on its
own after `retry_backoff_s`, doubled per retry, `retries` times; each target has a thread, an outgoing queue and a
retry heap of its own, so a target that hangs until its timeout delays only its own messages. What the rules need to
know about earlier detections is read once from the detection log at start (the last detection per class, the latest
`rare_below` per class within `rare_days`) and kept in memory after.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeav.errors import ConfigError
from edgeav.timebase import NS_PER_S

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edgeav.schema.integrations import NotifyConfig, NotifyRule

log = logging.getLogger(__name__)
DAY_NS = 86_400 * NS_PER_S


@dataclass(frozen=True)
class Notice:
    """What the main loop hands over: the detection and where it is in the log."""

    detection_id: str
    utc_ns: int
    label: str
    confidence: float
    modalities: tuple[str, ...]


def local_day(utc_ns: int) -> tuple[int, int, int]:
    t = time.localtime(utc_ns / NS_PER_S)
    return (t.tm_year, t.tm_mon, t.tm_mday)


def read_urls(cfg: NotifyConfig) -> list[str]:
    urls = list(cfg.urls)
    if cfg.urls_file is not None:
        p = Path(cfg.urls_file)
        if not p.is_file():
            raise ConfigError(f"daemon.notify.urls_file {p}: not found")
        urls += [
            ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")
        ]
    if not urls:
        raise ConfigError("daemon.notify has no target URL (notify.urls, notify.urls_file)")
    return urls


def with_timeouts(url: str, timeout_s: float) -> str:
    """Apprise's connect / read timeouts (cto, rto) added to a URL that does not set them."""
    if "cto=" in url or "rto=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}cto={timeout_s:g}&rto={timeout_s:g}"


def make_targets(urls: Sequence[str], timeout_s: float) -> list:
    """One Apprise object per URL (so each is retried on its own); a URL Apprise cannot parse is a ConfigError."""
    try:
        import apprise
    except ImportError:
        raise ConfigError(
            "daemon.notify needs Apprise: pip install 'edgeav[notify]' (or set daemon.notify.enabled=false)"
        ) from None
    targets = []
    for i, url in enumerate(urls):
        ap = apprise.Apprise()
        if not ap.add(with_timeouts(url, timeout_s)):
            scheme = url.split("://", 1)[0] if "://" in url else url[:12]
            raise ConfigError(f"daemon.notify URL #{i + 1} ({scheme}://...) is not a URL Apprise understands")
        targets.append(ap)
    return targets


class RuleState:
    """What the rules remember of each class: the day of its last detection, its latest detections (at most
    rare_below of them) and when it last notified."""

    def __init__(self, cfg: NotifyConfig) -> None:
        self.cfg = cfg
        self.last_day: dict[str, tuple[int, int, int]] = {}
        self.recent: dict[str, collections.deque[int]] = {}
        self.last_sent_ns: dict[str, int] = {}

    def rule(self, label: str) -> NotifyRule:
        return self.cfg.classes.get(label, self.cfg.default)

    def seed(self, db_path: str | Path, labels: Sequence[str], now_ns: int) -> None:
        """From the log: each class's last detection and its latest ones within its rare span (read-only)."""
        p = Path(db_path)
        if not p.exists():
            return
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5.0)
        try:
            for lb in labels:
                r = self.rule(lb)
                (last,) = con.execute("SELECT MAX(utc_ns) FROM detections WHERE label = ?", (lb,)).fetchone()
                if last is not None:
                    self.last_day[lb] = local_day(int(last))
                if r.rare_below is not None:
                    since = now_ns - int(r.rare_days * DAY_NS)
                    rows = con.execute(
                        "SELECT utc_ns FROM detections WHERE label = ? AND utc_ns >= ? ORDER BY utc_ns DESC LIMIT ?",
                        (lb, since, r.rare_below),
                    ).fetchall()
                    self.recent[lb] = collections.deque(sorted(int(u) for (u,) in rows), maxlen=r.rare_below)
        finally:
            con.close()

    def decide(self, n: Notice) -> str | None:
        """The reason to notify ("first of the day", "rare", "detected"), or None; records the detection."""
        r = self.rule(n.label)
        allowed = not self.cfg.only_classes or n.label in self.cfg.only_classes
        first = self.last_day.get(n.label) != local_day(n.utc_ns)
        rare = None
        if r.rare_below is not None:
            recent = self.recent.setdefault(n.label, collections.deque(maxlen=r.rare_below))
            rare = sum(1 for u in recent if u >= n.utc_ns - int(r.rare_days * DAY_NS)) < r.rare_below
            recent.append(n.utc_ns)
        self.last_day[n.label] = local_day(n.utc_ns)
        if not allowed or n.confidence < r.min_confidence:
            return None
        last = self.last_sent_ns.get(n.label)
        if last is not None and n.utc_ns - last < r.cooldown_s * NS_PER_S:
            return None
        news = []
        if r.first_of_day and first:
            news.append("first of the day")
        if rare:
            news.append(f"rare: fewer than {r.rare_below} in {r.rare_days:g} days")
        if (r.first_of_day or r.rare_below is not None) and not news:
            return None
        self.last_sent_ns[n.label] = n.utc_ns
        return "; ".join(news) or "detected"


def message(cfg: NotifyConfig, unit: str, n: Notice, reason: str) -> tuple[str, str]:
    """(title, body): class, confidence, modalities, local time, why, and the detection's web link."""
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(n.utc_ns / NS_PER_S))
    title = cfg.title.format(unit=unit, label=n.label, confidence=f"{n.confidence:.0%}")
    lines = [
        f"{n.label}: {n.confidence:.0%} confidence ({'+'.join(n.modalities) or 'no sensor'}) at {when}",
        f"why: {reason}",
    ]
    if cfg.base_url:
        lines.append(f"{cfg.base_url.rstrip('/')}/detections/{n.detection_id}")
    return title, "\n".join(lines)


class Notifier:
    """The queue and the sending thread. `counts`: queued, suppressed, dropped (queue full), sent, retried, failed
    (per target message after its last retry)."""

    def __init__(
        self,
        cfg: NotifyConfig,
        unit: str,
        labels: Sequence[str],
        db_path: str | Path | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        unknown = (set(cfg.classes) | set(cfg.only_classes)) - set(labels)
        if unknown:
            raise ConfigError(f"daemon.notify names unknown label(s) {sorted(unknown)}; labels: {list(labels)}")
        self.cfg, self.unit, self.labels, self.db_path = cfg, unit, list(labels), db_path
        self.targets = make_targets(read_urls(cfg), cfg.timeout_s)
        self.jobs: collections.deque[Notice] = collections.deque()  # append / popleft are atomic
        self.state = RuleState(cfg)
        self.counts: collections.Counter[str] = collections.Counter()
        self.on_outcome = on_outcome
        self._stop = threading.Event()
        self._lock = threading.Lock()  # counts are bumped from every thread
        self._threads: list[threading.Thread] = []
        # one outgoing deque and one retry heap per target, each served by its own thread: a target that hangs
        # until its timeout delays only its own messages
        self._outs: list[collections.deque[tuple[str, str]]] = [collections.deque() for _ in self.targets]
        self._retries: list[list[tuple[float, int, int, str, str]]] = [[] for _ in self.targets]  # due, seq, try, ..
        self._seq = itertools.count()  # ties of due times in a heap: next() needs no lock

    def _count(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] += n
        if self.on_outcome is not None and outcome in ("sent", "failed", "dropped", "suppressed"):
            for _ in range(n):
                self.on_outcome(outcome)

    def start(self) -> Notifier:
        self._threads = [threading.Thread(target=self._run, name="notify", daemon=True)]
        self._threads += [
            threading.Thread(target=self._target_run, args=(t,), name=f"notify-{t + 1}", daemon=True)
            for t in range(len(self.targets))
        ]
        for th in self._threads:
            th.start()
        log.info("notifications to %d target(s) (Apprise), from a queue of %d", len(self.targets), self.cfg.queue_max)
        return self

    def submit(self, n: Notice) -> bool:
        """From the main loop: never blocks. False (counted as dropped) when the queue is full."""
        if len(self.jobs) >= self.cfg.queue_max:
            self._count("dropped")
            return False
        self.jobs.append(n)
        self.counts["queued"] += 1  # only the main loop writes this key
        return True

    def _left(self) -> int:
        return len(self.jobs) + sum(len(o) for o in self._outs) + sum(len(r) for r in self._retries)

    def stop(self, timeout_s: float = 1.0) -> None:
        """Send what is queued for up to `timeout_s`, then stop (what is left is logged, not sent)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._left() and self._threads:
            time.sleep(0.02)
        self._stop.set()
        for th in self._threads:  # a send in progress ends by its own timeout; the threads are daemons
            th.join(max(0.05, deadline - time.monotonic()))
        if self._left():
            log.warning("notifications: %d not sent at stop", self._left())

    # -- the threads ---------------------------------------------------------------------------------------------
    def _send(self, target: int, attempt: int, title: str, body: str) -> None:
        try:
            ok = bool(self.targets[target].notify(body=body, title=title))
        except Exception as e:  # a plugin's own error: counts as a failed send
            log.debug("notify target %d raised %s", target + 1, e)
            ok = False
        if ok:
            self._count("sent")
            return
        if attempt < self.cfg.retries:
            delay = self.cfg.retry_backoff_s * (2**attempt)
            heapq.heappush(self._retries[target], (time.monotonic() + delay, next(self._seq), attempt + 1, title, body))
            self._count("retried")
            log.warning("notification to target %d failed; retry %d in %.1f s", target + 1, attempt + 1, delay)
        else:
            self._count("failed")
            log.error("notification to target %d failed after %d tries: %s", target + 1, attempt + 1, title)

    def _target_run(self, t: int) -> None:
        out, retries = self._outs[t], self._retries[t]
        while not self._stop.is_set():
            if retries and retries[0][0] <= time.monotonic():
                _, _, attempt, title, body = heapq.heappop(retries)
                self._send(t, attempt, title, body)
                continue
            try:
                title, body = out.popleft()
            except IndexError:
                self._stop.wait(0.05 if not retries else min(0.05, max(0.0, retries[0][0] - time.monotonic())))
                continue
            self._send(t, 0, title, body)

    def _run(self) -> None:
        """Rules: each notice is decided here, its message handed to every target's thread."""
        try:
            if self.db_path is not None:
                self.state.seed(self.db_path, self.labels, time.time_ns())
        except sqlite3.Error as e:
            log.warning("notifications: cannot read earlier detections from the log (%s); rules start empty", e)
        while not self._stop.is_set():
            try:
                n = self.jobs.popleft()
            except IndexError:
                self._stop.wait(0.05)
                continue
            reason = self.state.decide(n)
            if reason is None:
                self._count("suppressed")
                continue
            title, body = message(self.cfg, self.unit, n, reason)
            for out in self._outs:
                if len(out) >= self.cfg.queue_max:
                    self._count("dropped")  # this target is far behind (down, or slower than detections come)
                else:
                    out.append((title, body))


__all__ = ["Notifier", "Notice", "RuleState", "message", "make_targets", "read_urls", "with_timeouts"]
