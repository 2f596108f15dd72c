"""Near misses: what a target entry that matches nothing most likely meant, by the tokens of real names.
Pure string work on names (no model, no PEFT): the caller confirms each suggestion with PEFT's matching.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable

_TOKEN = re.compile(r"[._]")
_NUMBER = re.compile(r"\d+")


@functools.lru_cache(maxsize=4096)
def _same_token(a: str, b: str) -> bool:
    """Tokens of two names that are the same word: equal, or (both 3+ characters) a small typo apart.
    Short tokens (`q`, `k`, `fc`) carry identity and must be equal."""
    if a == b:
        return True
    return min(len(a), len(b)) >= 3 and difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= 0.75


def _aligned(entry: list[str], other: list[str]) -> set[int]:
    """Indices of `other`'s tokens matched, in order, by `entry`'s (a longest common subsequence)."""
    rows = [[0] * (len(other) + 1) for _ in range(len(entry) + 1)]
    for i in range(len(entry) - 1, -1, -1):
        for j in range(len(other) - 1, -1, -1):
            rows[i][j] = (rows[i + 1][j + 1] + 1 if _same_token(entry[i], other[j])
                          else max(rows[i + 1][j], rows[i][j + 1]))
    used, i, j = set(), 0, 0
    while i < len(entry) and j < len(other):
        if _same_token(entry[i], other[j]) and rows[i][j] == rows[i + 1][j + 1] + 1:
            used.add(j)
            i, j = i + 1, j + 1
        elif rows[i + 1][j] >= rows[i][j + 1]:
            i += 1
        else:
            j += 1
    return used


def _aligned_exact(entry: list[str], other: list[str]) -> list[str]:
    """Whole dot-components the two names share, in order."""
    matcher = difflib.SequenceMatcher(None, entry, other, autojunk=False)
    return [c for block in matcher.get_matching_blocks() for c in entry[block.a:block.a + block.size]]


def near_misses(entry: str, names: Iterable[str], *, limit: int = 3) -> list[tuple[str, list[str]]]:
    """What a list entry that matches nothing most likely meant: up to `limit` real name suffixes, best
    first, each with the names it selects as a list entry (the name itself or a `.`-suffix).

    One pass over `names` collects the distinct suffixes of one dot-component fewer, as many and one more
    than `entry` (a missing or extra component: `down_proj.weight` for the parameter `down_proj`); suffixes
    holding layer numbers count only when the entry holds numbers. Each distinct suffix is scored on its
    name tokens (split on `.` and `_`) aligned in order with the entry's, a typo apart at most: it must
    account for every token of its last component (so `v_proj` never suggests `o_proj`) and for more than
    half of the entry's tokens. The score adds the token overlap (Dice) and the overlap of whole
    dot-components, so `mlp.experts.down_proj.weight` means `mlp.experts.down_proj`, not
    `mlp.shared_expert.down_proj.weight`; difflib's ratio breaks ties in order only. The suggestions tied
    with the best score are returned; the caller checks them with PEFT's matching."""
    depth = entry.count(".") + 1
    numbered = bool(_NUMBER.search(entry))
    suffixes: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        for k in (depth - 1, depth, depth + 1):
            if 1 <= k <= len(parts):
                suffix = ".".join(parts[-k:])
                if numbered or not any(p.isdigit() for p in parts[-k:]):
                    suffixes.setdefault(suffix, []).append(name)
    tokens = [t for t in _TOKEN.split(entry) if t]
    scored = []
    for suffix, selected in suffixes.items():
        if suffix == entry:
            continue
        other = [t for t in _TOKEN.split(suffix) if t]
        leaf = [t for t in _TOKEN.split(suffix.rpartition(".")[2]) if t]
        used = _aligned(tokens, other)
        if len(used) * 2 <= len(tokens) or any(j not in used for j in range(len(other) - len(leaf), len(other))):
            continue
        components = len(_aligned_exact(entry.split("."), suffix.split(".")))
        score = (2 * len(used) / (len(tokens) + len(other))
                 + 2 * components / (depth + suffix.count(".") + 1))
        ratio = difflib.SequenceMatcher(None, entry, suffix, autojunk=False).ratio()
        scored.append(((round(score, 3), round(ratio, 3)), suffix, selected))
    scored.sort(key=lambda item: (item[0], -len(item[1])), reverse=True)
    best = [item for item in scored if item[0][0] == scored[0][0][0]] if scored else []
    return [(suffix, selected) for _, suffix, selected in best[:limit]]
