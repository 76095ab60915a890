"""The README's option tables are generated from the commands themselves and must stay so."""

import importlib.util
import re
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_cli():
    gen = _generator()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert gen.render(text) == text, "README.md's option tables differ from the CLI; run: python scripts/cli_reference.py"
    assert {m.group("name") for m in gen.MARK.finditer(text)} == {"train", "convert", "run"}


def test_every_option_and_config_key_is_in_its_table():
    from edgesight.cli import cli
    from edgesight.edge import options
    from edgesight.edge.loop.config import RunConfig

    gen = _generator()
    run = gen.table("run")
    ctx = click.Context(cli)
    params = {p.name for p in cli.get_command(ctx, "run").params}
    for p in cli.get_command(ctx, "run").params:
        if isinstance(p, click.Option):
            assert f"`{p.opts[0]}`" in run
    # every run option is a run flag with its config key
    assert {s.name for s in options.specs(RunConfig) if s.opt.cli} - params == set()
    for s in options.specs(RunConfig):
        if s.name in params:
            assert re.search(rf"\| `{s.name}` \|$", run, re.M), s.name


def test_the_check_fails_on_a_stale_table(tmp_path):
    gen = _generator()
    stale = "<!-- cli:run -->\n| option | default | meaning |\n<!-- /cli:run -->\n"
    assert gen.render(stale) != stale and "`--threshold`" in gen.render(stale)


def test_short_options_mean_one_thing_everywhere():
    from edgesight.cli import cli

    seen = {}
    ctx = click.Context(cli)

    def walk(group, prefix):
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix}{name} ")
                continue
            for p in cmd.params:
                if isinstance(p, click.Option):
                    for o in p.opts + p.secondary_opts:
                        if re.fullmatch(r"-[A-Za-z]", o):
                            seen.setdefault(o, set()).add(p.name)
    walk(cli, "")
    clashes = {o: names for o, names in seen.items() if len(names) > 1}
    assert clashes == {}
