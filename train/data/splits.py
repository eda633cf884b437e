"""Splits by group (recording, speaker), never by clip, deterministic under a seed.

Groups are ordered by sha256(seed, group): the order does not depend on how files were listed. Groups are taken
round-robin over classes (each class gives its first-ranked group, then its second, ...) so that a held-out split
covers as many classes as it can, and a group is never taken when it is the last one its class has in the pool
it is taken from (a class never loses all its training groups).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping


def group_rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{int(seed)}\x00{group}".encode()).hexdigest()


def target_count(n: int, fraction: float) -> int:
    """How many of `n` groups a `fraction` asks for: round half up; at least 1 and at most n-1 when n >= 2."""
    if fraction <= 0.0 or n < 2:
        return 0
    k = int(fraction * n + 0.5)
    return min(max(k, 1), n - 1)


def pick_groups(group_classes: Mapping[str, Iterable[str]], fraction: float, seed: int) -> set[str]:
    """Choose about `fraction` of the groups in `group_classes` (group -> the classes it holds).

    Deterministic under `seed`; never takes the last remaining group of a class.
    """
    classes_of = {g: sorted(set(c)) for g, c in group_classes.items()}
    want = target_count(len(classes_of), fraction)
    if want == 0:
        return set()
    per_class: dict[str, list[str]] = defaultdict(list)
    for g, cs in classes_of.items():
        per_class[cs[0] if cs else ""].append(g)
    order: list[tuple[int, str, str]] = []
    for gs in per_class.values():
        for rank, g in enumerate(sorted(gs, key=lambda g: group_rank(seed, g))):
            order.append((rank, group_rank(seed, g), g))
    order.sort()
    left: dict[str, int] = defaultdict(int)  # groups per class still in the pool
    for cs in classes_of.values():
        for c in cs:
            left[c] += 1
    chosen: set[str] = set()
    for _, _, g in order:
        if len(chosen) >= want:
            break
        if all(left[c] > 1 for c in classes_of[g]):
            chosen.add(g)
            for c in classes_of[g]:
                left[c] -= 1
    return chosen
