"""Sentences from the catalogue: rules and views pass keys and values, this module fills them in for every
language, with each language's plurals, lists and punctuation. Stdlib only.

`text(key, **fields)` gives {"en": ..., "zh": ...}; a field may itself be such a dict (a nested sentence).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .catalogue import LANGUAGES, MESSAGES
from .regions import short_name

Texts = dict[str, str]


def _form(entry: Any, fields: dict[str, Any]) -> str:
    """The plural form a {"one", "other"} entry needs for the `count` field, or the entry itself."""
    if isinstance(entry, dict):
        return entry["one"] if fields.get("count") == 1 else entry["other"]
    return entry


def say(key: str, lang: str, **fields: Any) -> str:
    """The sentence `key` in one language (fields that are {language: text} dicts resolved for it)."""
    values = {k: v[lang] if isinstance(v, dict) else v for k, v in fields.items()}
    return _form(MESSAGES[key][lang], values).format(**values)


def text(key: str, **fields: Any) -> Texts:
    """The sentence `key` in every language, with `fields` filled in."""
    return {lang: say(key, lang, **fields) for lang in LANGUAGES}


def literal(value: str) -> Texts:
    """A value that reads the same in every language (a name, a number, a code)."""
    return dict.fromkeys(LANGUAGES, value)


def at(location: str | None) -> Texts:
    """The location phrase after a statement: " at f.py:3" / "（f.py:3）", or nothing."""
    if not location:
        return literal("")
    return {"en": f" at {location}", "zh": f"（{location}）"}


def place(location: str | None) -> Texts:
    """The location phrase naming a place: " at f.py:3" / " f.py:3 处", or nothing."""
    if not location:
        return literal("")
    return {"en": f" at {location}", "zh": f" {location} 处"}


def adapter_kind(tuners: Iterable[str]) -> Texts:
    """What adapter layers are called in a sentence: their tuner's name when there is one ("LoRA", "LoHa"),
    "adapter" when the tuners are mixed or unknown."""
    names = sorted(set(filter(None, tuners)))
    return literal(names[0]) if len(names) == 1 else dict(MESSAGES["adapter.kind"])


def join(*parts: Texts) -> Texts:
    """Concatenate sentences language by language."""
    return {lang: "".join(p[lang] for p in parts) for lang in LANGUAGES}


def listing(items: Iterable[str], limit: int = 4, *, empty: Texts | str = "") -> Texts:
    """`a, b, c and 5 more` in each language, PEFT's wrapper chain shortened (names are shown, not parsed)."""
    shown = [short_name(i) for i in sorted(items)]
    result = {}
    for lang in LANGUAGES:
        separator = MESSAGES["list.separator"][lang]
        if len(shown) <= limit:
            result[lang] = separator.join(shown)
        else:
            result[lang] = say("list.more", lang, shown=separator.join(shown[:limit]), rest=len(shown) - limit,
                               total=len(shown))
        if not result[lang]:  # nothing, or only the model itself (whose name is "")
            result[lang] = empty[lang] if isinstance(empty, dict) else empty
    return result


def series(*parts: Texts) -> Texts:
    """Clauses one after another, separated as each language writes them (no capital, no end mark)."""
    return {lang: MESSAGES["clauses.separator"][lang].join(p[lang] for p in parts) for lang in LANGUAGES}


def clauses(*parts: Texts) -> Texts:
    """Clauses joined into one sentence in each language: capitalised, separated and ended as it writes."""
    result = {}
    for lang in LANGUAGES:
        sentence = MESSAGES["clauses.separator"][lang].join(p[lang] for p in parts)
        result[lang] = sentence[:1].upper() + sentence[1:] + MESSAGES["clauses.end"][lang]
    return result


__all__ = ["LANGUAGES", "MESSAGES", "Texts", "adapter_kind", "at", "clauses", "series", "join", "listing", "literal", "place", "say", "text"]
