"""Text from a run file is user data: module names, labels, messages may hold terminal escapes (ESC, BEL,
CR), NUL, or bidi controls (U+202E) that clear a screen, retitle a terminal or reorder what a reader sees,
and that XML forbids. Everything printed or drawn from a run goes through here. Stdlib only."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL and C1 controls, bidi embeddings / overrides / isolates and marks.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """The text with every unsafe character shown as a visible escape (`\\x1b`, `\\u202e`)."""
    return _UNSAFE.sub(_visible, text) if _UNSAFE.search(text) else text


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def json_printable(text: str) -> str:
    """A JSON document safe to print: unsafe characters (only ever inside strings) as JSON `\\u` escapes."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
