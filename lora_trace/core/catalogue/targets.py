"""What the target checks say about target_parameters and near misses, in every language, side by side.
Same format as findings.py. Stdlib only."""

from __future__ import annotations

from typing import Any

TARGETS: dict[str, dict[str, Any]] = {
    "target-unmatched.parameters": {
        "en": {"one": "{count} target_parameters entry of adapter '{adapter}' in {model} matched no parameter "
                      "({table}).",
               "other": "{count} target_parameters entries of adapter '{adapter}' in {model} matched no parameter "
                        "({table})."},
        "zh": "{model} 中适配器 '{adapter}' 的 {count} 个 target_parameters 条目没有匹配到任何参数（{table}）。"},
    "target-unmatched.mixed": {
        "en": {"one": "{count} target_modules / target_parameters entry of adapter '{adapter}' in {model} matched "
                      "nothing ({table}).",
               "other": "{count} target_modules / target_parameters entries of adapter '{adapter}' in {model} "
                        "matched nothing ({table})."},
        "zh": "{model} 中适配器 '{adapter}' 的 {count} 个 target_modules / target_parameters 条目没有匹配到任何"
              "模块或参数（{table}）。"},
    "target-unmatched.row": {"en": "{entry!r} -> {count}", "zh": "{entry!r} -> {count}"},
    "target-unmatched.near": {
        "en": {"one": " {entry} most likely meant {names} ({count} in all): {corrected} selects it, checked with "
                      "PEFT's matching.",
               "other": " {entry} most likely meant {names} ({count} in all): {corrected} selects them, checked "
                        "with PEFT's matching."},
        "zh": " {entry} 很可能想指 {names}（共 {count} 个）：{corrected} 可以选中它们，已用 PEFT 的匹配规则验证。"},
    "target-unmatched.or": {"en": " or ", "zh": " 或 "},
    "target-unmatched.fix.near": {"en": ". Replace {replacements}.", "zh": "。将 {replacements}。"},
    "target-unmatched.fix.near.also": {"en": " Also replace {replacements}.", "zh": "另外，将 {replacements}。"},
    "target-unmatched.replace": {"en": "{entry} by {corrected}", "zh": "{entry} 改为 {corrected}"},
    "targets.near": {"en": "did you mean {corrected}? (checked with PEFT's matching: {count} selected)",
                     "zh": "是否想写 {corrected}？（已用 PEFT 的匹配规则验证：选中 {count} 个）"},
}
