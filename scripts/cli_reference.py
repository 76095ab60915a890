"""The README's option tables, generated from the commands' own definitions.

    python scripts/cli_reference.py          # rewrite the tables in README.md
    python scripts/cli_reference.py --check  # exit 1 when README.md and the CLI disagree

Each table sits between ``<!-- cli:COMMAND -->`` and ``<!-- /cli:COMMAND -->`` in the README.
For commands with ``--config``, the YAML key of each option is its name with underscores.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List

import click

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = re.compile(r"(<!-- cli:(?P<name>[\w ]+) -->\n)(?P<body>.*?)(<!-- /cli:(?P=name) -->)", re.S)


def _command(path: str) -> click.Command:
    from edgesight.cli import cli

    cmd: click.Command = cli
    ctx = click.Context(cli)
    for part in path.split():
        cmd = cmd.get_command(ctx, part)  # type: ignore[attr-defined]
        if cmd is None:
            raise SystemExit(f"cli_reference: no command '{path}'")
    return cmd


# commands whose options come from a config dataclass: their --config keys are its field names
CONFIGS = {"train": "edgesight.training.config:TrainConfig", "convert": "edgesight.convert.config:ConvertConfig",
           "run": "edgesight.edge.loop.config:RunConfig"}


def _config_keys(path: str) -> set:
    import importlib

    from edgesight.edge import options

    if path not in CONFIGS:
        return set()
    module, name = CONFIGS[path].split(":")
    return {s.name for s in options.specs(getattr(importlib.import_module(module), name))}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(path: str) -> str:
    """The markdown table of the options of ``edgesight PATH``."""
    cmd = _command(path)
    has_config = any(p.name == "config_path" for p in cmd.params)
    keys = _config_keys(path)
    head = "| option | default | meaning |" + (" `--config` key |" if has_config else "")
    rows: List[str] = [head, "|---|---|---|" + ("---|" if has_config else "")]
    for p in cmd.params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        default = ""
        if p.show_default and p.default not in (None, (), "") and not (p.is_flag and p.default is False):
            default = f"`{'on' if p.default is True else p.default}`"
        meaning = _cell(p.help or "")
        if isinstance(p.type, click.Choice):
            meaning += f" One of: {', '.join(f'`{c}`' for c in p.type.choices)}."
        if isinstance(p.type, (click.IntRange, click.FloatRange)):
            lo, hi = p.type.min, p.type.max
            low = "" if lo is None else (f"> {lo:g}" if p.type.min_open else f"≥ {lo:g}")
            high = "" if hi is None else f"≤ {hi:g}"
            meaning += f" Range: {' and '.join(x for x in (low, high) if x)}."
        if p.envvar:
            meaning += f" Environment: `{p.envvar}`."
        row = f"| {names} | {default} | {meaning.strip()} |"
        if has_config:
            key = f"`{p.name}`" if p.name in keys else ""
            row += f" {key} |"
        rows.append(row)
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    return MARK.sub(lambda m: m.group(1) + table(m.group("name")) + m.group(4), text)


def main(argv: List[str]) -> int:
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's option tables differ from the CLI; run: python scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
