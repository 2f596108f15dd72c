"""Run files from somewhere else: every field of a real saved run given a wrong type, a dangling reference or
terminal control characters. No CLI verb prints a traceback: bad input is exit 2 with a plain message, and
nothing printed from a run can move the cursor, clear the screen or reorder text."""

from __future__ import annotations

import copy
import json
import pathlib
import random

import pytest

from lora_trace.cli import main

GOLDEN = pathlib.Path(__file__).parent / "golden"
HOSTILE = ["\x1b[2J\x1b]0;pwned\x07", "a\rb", "\u202eevil", "<script>x</script>\x00"]
WRONG = [None, 1, 1.5, True, "x", [], {}, [1, [2]], {"a": None}]


def _leaves(value, path=()):
    """Every (path, value) of a JSON tree."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _leaves(item, (*path, index))


def _set(data, path, value):
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _mutations(limit: int):
    data = json.loads((GOLDEN / "demo-broken.run.json").read_text(encoding="utf-8"))
    paths = [p for p, _ in _leaves(data) if p]
    rng = random.Random(0)
    chosen = rng.sample(paths, min(limit, len(paths)))
    for path in chosen:
        for bad in WRONG:
            yield f"{'.'.join(map(str, path))}={bad!r}", _set(data, path, bad)
    strings = [p for p, v in _leaves(data) if isinstance(v, str) and p[-1] not in ("kind",)]
    for path in rng.sample(strings, min(limit, len(strings))):
        for text in HOSTILE:
            yield f"{'.'.join(map(str, path))}=hostile", _set(data, path, text)
    for field in ("loss_fed_by", "region_calls"):
        yield f"trace.{field} dangling", _set(data, ("trace", field), [555] if field == "loss_fed_by" else
                                              [{"seq": 0, "region": "r", "parent": 9, "grad_enabled": True,
                                                "leaf": True, "fed_by": [77], "inferred": False}])
    yield "findings[0].severity=fatal", _set(data, ("findings", 0, "severity"), "fatal")
    yield "findings[0].code=unknown", _set(data, ("findings", 0, "code"), "no-such-code")
    yield "calls[0].cut=99", _set(data, ("trace", "calls", 0, "cut"), 99)
    yield "nested evidence", _set(data, ("findings", 0, "evidence"), json.loads("[" * 900 + "]" * 900))


VERBS = {
    "show": lambda run, out: ["show", run],
    "show --json": lambda run, out: ["show", run, "--json"],
    "render": lambda run, out: ["render", run, "-o", str(out / "g.dot")],
    "report": lambda run, out: ["report", run, "-o", str(out / "r.html")],
    "diff": lambda run, out: ["diff", str(GOLDEN / "demo-fixed.run.json"), run],
}
_RAW = ("\x1b", "\x07", "\r", "\u202e", "\x00")


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_no_run_file_makes_a_verb_print_a_traceback(verb, tmp_path, capsys):
    failures = []
    for name, data in _mutations(limit=40):
        run = tmp_path / "run.json"
        run.write_text(json.dumps(data), encoding="utf-8")
        try:
            code = main(VERBS[verb](str(run), tmp_path))
        except Exception as error:  # noqa: BLE001 - the point: nothing may escape
            failures.append(f"{name}: {type(error).__name__}: {error}"[:200])
            continue
        out, err = capsys.readouterr()
        if code not in (0, 1, 2):
            failures.append(f"{name}: exit {code}")
        raw = [c for c in _RAW if c in out or c in err]
        if raw:
            failures.append(f"{name}: printed raw {raw!r}")
        if verb == "render" and (tmp_path / "g.dot").exists():
            dot = (tmp_path / "g.dot").read_text(encoding="utf-8")
            if any(c in dot for c in _RAW):
                failures.append(f"{name}: raw control character in the DOT file")
    assert failures == [], f"{len(failures)} failures, first: {failures[:5]}"


def test_a_bad_nesting_or_a_stream_is_exit_2(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    assert main(["show", str(deep)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    assert main(["show", str(link)]) == 2


def test_an_svg_of_hostile_names_is_well_formed_xml(tmp_path):
    import xml.etree.ElementTree as ElementTree

    data = json.loads((GOLDEN / "demo-broken.run.json").read_text(encoding="utf-8"))
    for index, name in enumerate(HOSTILE):
        data["trace"]["sites"][index]["module"] = name
        data["trace"]["sites"][index]["region"] = name
    data["trace"]["label"] = HOSTILE[0]
    run = tmp_path / "run.json"
    run.write_text(json.dumps(data), encoding="utf-8")
    assert main(["render", str(run), "-o", str(tmp_path / "g.svg")]) == 0
    ElementTree.parse(tmp_path / "g.svg")  # raises on a control character XML 1.0 forbids
    assert "\\x1b" in (tmp_path / "g.svg").read_text(encoding="utf-8")  # shown, not dropped
