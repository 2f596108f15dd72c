"""The catalogue: every key in every language, the same fields everywhere, plurals and lists per language."""

import string

import pytest

from lora_trace.core.catalogue import LANGUAGES, MESSAGES
from lora_trace.core.messages import clauses, listing, text


def _forms(value):
    return list(value.values()) if isinstance(value, dict) else [value]


def _fields(template):
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_key_speaks_every_language_with_the_same_fields(key):
    entry = MESSAGES[key]
    assert set(entry) == set(LANGUAGES), key
    fields = {lang: set().union(*(_fields(f) for f in _forms(entry[lang]))) for lang in LANGUAGES}
    if key != "list.more":  # English counts the rest, Chinese the total: both are always given
        assert fields["zh"] == fields["en"], key
    for lang in LANGUAGES:
        if isinstance(entry[lang], dict):
            assert set(entry[lang]) == {"one", "other"} and "count" in fields[lang], key


def test_plurals_are_chosen_by_count():
    assert text("layers", count=1, params=2, kind="LoRA")["en"] == "1 LoRA layer (2 trainable parameters)"
    assert text("layers", count=3, params=6, kind="LoRA")["en"] == "3 LoRA layers (6 trainable parameters)"
    assert text("layers", count=3, params=6, kind="LoRA")["zh"] == "3 个 LoRA 层（6 个可训练参数）"


def test_lists_and_clauses_follow_each_language():
    long = listing(["a", "b", "c", "d", "e", "f"])
    assert long == {"en": "a, b, c, d and 2 more", "zh": "a、b、c、d 等共 6 个"}
    assert listing([""], empty=text("model.root")) == {"en": "(model)", "zh": "（模型）"}
    both = clauses({"en": "one thing", "zh": "一"}, {"en": "another", "zh": "二"})
    assert both == {"en": "One thing; another.", "zh": "一；二。"}


def test_no_rule_or_view_carries_words_of_a_language():
    """English plural suffixes or per-language punctuation outside the catalogue would be language in code."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "lora_trace"
    for path in list((root / "analysis").rglob("*.py")) + list((root / "present").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert "plural=" not in source and 'ies="' not in source and '"zh":' not in source, path
