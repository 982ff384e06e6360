"""docs/options.md, generated from the config dataclasses: `python -m stages.options_doc > docs/options.md`.

Kept apart from `stages.options` so a command imports only its own step's config, not every step's.
"""

from __future__ import annotations

import dataclasses
import json

from pipeline.config import default_of
from stages.options import flag_name


def sections() -> list[tuple[str, type]]:
    """(params.yaml section, config dataclass) of every step, in pipeline order."""
    from pipeline.demo.teacher import PretrainConfig
    from pipeline.demo.world import WorldConfig
    from pipeline.distill.config import DistillConfig
    from pipeline.extract.embed_step import EmbedConfig
    from pipeline.extract.shard_step import ShardConfig
    from pipeline.report.step import ReportConfig

    return [("world", WorldConfig), ("teacher", PretrainConfig), ("shard", ShardConfig), ("embed", EmbedConfig),
            ("distill", DistillConfig), ("report", ReportConfig)]


def options_markdown() -> str:
    """docs/options.md: every params.yaml key with its flag, default and help (generated)."""
    lines = ["# Options", "",
             "Generated from the config dataclasses by `python -m stages.options_doc > docs/options.md` (a test "
             "checks it is current). Each `params.yaml` section is one dataclass; a key's flag, where it has "
             "one, overrides the file. Defaults are the library's (RISE's protocol for `distill`); the "
             "embedded demo's `params.yaml` overrides some of them for a 2-core machine.", ""]
    for section, cls in sections():
        lines += [f"## `{section}`", "", "| key | flag | default | |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            flag = f"`{flag_name(f.name)}`" if f.metadata.get("cli", True) else "params.yaml only"
            default = json.dumps(default_of(f))
            text = f.metadata.get("help", "").replace("|", "\\|")
            choices = f.metadata.get("choices")
            if choices:
                text += f" One of: {', '.join(map(str, choices))}."
            lines.append(f"| `{f.name}` | {flag} | `{default}` | {text} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_markdown(), end="")
