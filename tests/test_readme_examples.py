"""The README's command examples parse against the real CLI as written: every option exists for
that command, every value has the right type, choice and range, and no argument is missing.

Only parsing is checked (click's ``make_context``, nothing runs); paths need not exist here,
since the examples name the demo's outputs and the user's own folders.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import List

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(edgesight [^`]+)`")
# A synopsis, not an example: placeholders for repeated or optional parts, alternatives, a
# command's name only.
SYNOPSIS = re.compile(r"\.\.\.|\[|\||\bCOMMAND\b")


def examples(text: str) -> List[str]:
    """``edgesight ...`` command lines of the README: lines of its shell code blocks and inline
    code in its prose (headings are synopses, and inline ``edgesight NAME`` names a command:
    both left out)."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang == "python":
            continue
        for line in body.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line.startswith("edgesight "):
                found.append(line)
    prose = "\n".join(line for line in FENCE.sub("", text).splitlines() if not line.startswith("#"))
    found += [" ".join(m.split()) for m in INLINE.findall(prose) if len(m.split()) > 2]
    return [c for c in found if not SYNOPSIS.search(c)]


def parse(command: str) -> click.Context:
    """Parse ``edgesight ARGS`` the way the console script does, without running it."""
    from edgesight.cli import cli

    args = shlex.split(command)[1:]
    while args and args[0] in ("-v", "--verbose"):
        args.pop(0)
    cmd: click.Command = cli
    name = "edgesight"
    ctx = click.Context(cli)
    while isinstance(cmd, click.Group):
        if not args:
            raise click.UsageError(f"{command}: no subcommand")
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"{command}: no command '{name}'")
        cmd = sub
    return cmd.make_context(name, args)


@pytest.fixture
def paths_need_not_exist(monkeypatch):
    convert = click.Path.convert

    def lenient(self, value, param, ctx):
        saved = self.exists
        self.exists = False
        try:
            return convert(self, value, param, ctx)
        finally:
            self.exists = saved

    monkeypatch.setattr(click.Path, "convert", lenient)


README_EXAMPLES = examples((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_examples_of_every_stage():
    commands = {shlex.split(c)[1] for c in README_EXAMPLES}
    assert {"train", "convert", "run", "evaluate", "classify", "explain", "benchmark", "doctor", "bundle", "deploy",
            "profiles", "datasets", "wheels"} <= commands
    # the video example carries the demo's window and decision settings
    video = [c for c in README_EXAMPLES if c.startswith("edgesight run") and "drive.mp4" in c]
    assert video and all("--roi 398,29,216,216" in c and "--threshold 0.5" in c and "--smooth 3" in c for c in video)


@pytest.mark.parametrize("command", README_EXAMPLES)
def test_readme_example_parses(command, paths_need_not_exist):
    parse(command)


def test_the_check_catches_what_a_reader_would_hit(paths_need_not_exist):
    text = """
```bash
edgesight run m --source 0 --treshold 0.5
```
Then `edgesight convert runs/x --quant int4 --out b`, and `edgesight train DATA ...` (see
`edgesight train`).
## `edgesight run BUNDLE --source SOURCE [options]`
"""
    found = examples(text)
    assert found == ["edgesight run m --source 0 --treshold 0.5", "edgesight convert runs/x --quant int4 --out b"]
    with pytest.raises(click.NoSuchOption):
        parse(found[0])
    with pytest.raises(click.BadParameter):
        parse(found[1])
    with pytest.raises(click.BadParameter):
        parse("edgesight run m --threshold 2")
    with pytest.raises(click.MissingParameter):
        parse("edgesight convert runs/x")
    with pytest.raises(click.UsageError, match="no command 'trian'"):
        parse("edgesight trian photos/")
    # a real path that is the wrong kind is still refused
    with pytest.raises(click.BadParameter):
        parse(f"edgesight run {ROOT / 'README.md'} --config {ROOT}")


def test_scripts_and_benchmarks_the_readme_names_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for script in set(re.findall(r"\bbash (scripts/[\w.-]+\.sh)", text)):
        assert (ROOT / script).is_file(), script
    for module in set(re.findall(r"python -m (benchmarks\.\w+)", text)):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (ROOT / image).is_file() and (ROOT / image).stat().st_size < 150_000, image
