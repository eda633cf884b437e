"""Bounded, thread-safe queues that count what they drop (birdnet-go style).

A live sensor must never block on a slow consumer, and a file replay must never lose data: the policy says which.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Policy = Literal["drop_oldest", "drop_newest", "block"]


class BoundedQueue(Generic[T]):
    """FIFO of at most `maxsize` items.

    policy:
      - "drop_oldest": put never blocks; when full the oldest item is discarded and `dropped` counts it (live).
      - "drop_newest": put never blocks; when full the new item is discarded and counted.
      - "block": put waits for room (up to its timeout) - backpressure for file replay; a put that times out
        returns False and counts as dropped.
    """

    def __init__(
        self, maxsize: int, policy: Policy = "drop_oldest", name: str = "queue", bell: threading.Event | None = None
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if policy not in ("drop_oldest", "drop_newest", "block"):
            raise ValueError(f"unknown policy {policy!r}")
        self.maxsize = int(maxsize)
        self.policy: Policy = policy
        self.name = name
        self._bell = bell  # set on every put and at close (a QueueGroup's consumer waits on it)
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.put_count = 0
        self.high_water = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T, timeout_s: float | None = None) -> bool:
        """Add `item`; True if it was queued (an older item may have been dropped for it)."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return False
            if len(self._items) >= self.maxsize:
                if self.policy == "drop_oldest":
                    self._items.popleft()
                    self.dropped += 1
                elif self.policy == "drop_newest":
                    self.dropped += 1
                    return False
                else:
                    deadline = None if timeout_s is None else time.monotonic() + timeout_s
                    while len(self._items) >= self.maxsize and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            self.dropped += 1
                            return False
                        self._cond.wait(remaining)
                    if self._closed:
                        self.dropped += 1
                        return False
            self._items.append(item)
            self.put_count += 1
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
            if self._bell is not None:
                self._bell.set()
            return True

    def get(self, timeout_s: float | None = None) -> tuple[bool, T | None]:
        """(True, item), or (False, None) when nothing arrived within `timeout_s` or the queue is closed and empty."""
        with self._cond:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while not self._items:
                if self._closed:
                    return False, None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False, None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return True, item

    def close(self) -> None:
        """Wake every waiter; later puts are refused (and counted), gets drain what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._bell is not None:
            self._bell.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int | str]:
        with self._cond:
            return {
                "name": self.name,
                "size": len(self._items),
                "maxsize": self.maxsize,
                "dropped": self.dropped,
                "put": self.put_count,
                "high_water": self.high_water,
            }


class QueueGroup:
    """One bounded queue per producer (e.g. per sensor), read by one consumer: `get` takes the next item from the
    queues in turn, waiting on one shared bell. Each queue keeps its own bound, policy and drop count, so a
    producer that outpaces the consumer drops only its own items."""

    def __init__(self) -> None:
        self._bell = threading.Event()
        self.queues: dict[str, BoundedQueue] = {}
        self._order: list[BoundedQueue] = []
        self._next = 0

    def add(self, name: str, maxsize: int, policy: Policy) -> BoundedQueue:
        if name in self.queues:
            raise ValueError(f"queue {name!r} is already in the group")
        q: BoundedQueue = BoundedQueue(maxsize, policy, name=name, bell=self._bell)
        self.queues[name] = q
        self._order.append(q)
        return q

    def __len__(self) -> int:
        return sum(len(q) for q in self._order)

    def get(self, timeout_s: float | None = None) -> tuple[bool, object | None]:
        """(True, item) from the next non-empty queue, or (False, None) after `timeout_s` / when all are closed
        and empty."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        n = len(self._order)
        while True:
            self._bell.clear()  # before looking: a put after the look sets it again and the wait returns at once
            for k in range(n):
                i = (self._next + k) % n
                ok, item = self._order[i].get(timeout_s=0)
                if ok:
                    self._next = (i + 1) % n
                    return True, item
            if all(q.closed for q in self._order):
                return False, None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False, None
            self._bell.wait(remaining)

    def close(self) -> None:
        for q in self._order:
            q.close()

    @property
    def dropped(self) -> dict[str, int]:
        return {name: q.dropped for name, q in self.queues.items()}
