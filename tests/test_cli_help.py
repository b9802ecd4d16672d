"""The commands as `--help` shows them: every option of every command has help text that shows its
default; and the default SLOs have one definition (core.default_slo) that the commands read."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ascendra.cli import COMMANDS, build_parser
from ascendra.cli.bench import judged_slos
from ascendra.core import default_slo
from ascendra.core.default_slo import DEFAULT_SLO, DefaultSLO
from ascendra.core.request import SLO
from ascendra.profiles import load_profile
from ascendra.runtime.slo_rules import slo_rule

README = Path(__file__).resolve().parents[1] / "README.md"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def shown(default: object) -> list[str]:
    """Ways a default may be written in a help text."""
    if isinstance(default, float):
        return [str(default), f"{default:g}"]
    return [str(default)]


def test_every_command_is_there():
    assert set(subcommands()) == set(COMMANDS) == {"serve", "bench", "simulate", "capacity", "generate",
                                                    "profile"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_that_shows_its_default(command: str):
    parser = subcommands()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {name}: no help"
        text = formatter._expand_help(action)  # what --help prints, %(default)s filled in
        if action.nargs == 0 or action.required:
            continue  # a flag is off unless given; a required option has no default
        assert "default" in text.lower(), f"{command} {name}: its help shows no default: {text!r}"
        if action.default not in (None, [], ""):
            assert any(s in text for s in shown(action.default)), (
                f"{command} {name}: default {action.default!r} not in {text!r}")
    parser.format_help()  # every help string expands


def test_the_top_level_help_names_every_command():
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


def test_commands_read_the_default_slos_from_one_place(monkeypatch: pytest.MonkeyPatch):
    """With the one definition changed, serve, bench, and simulate/capacity's 'serve' rule follow."""
    monkeypatch.setattr(default_slo, "DEFAULT_SLO", DefaultSLO(ttft_ms=1234.0, tbt_ms=567.0))
    parser = build_parser()
    serve = parser.parse_args(["serve"])
    assert (serve.ttft_slo_ms, serve.tbt_slo_ms) == (1234.0, 567.0)
    assert judged_slos(parser.parse_args(["bench"])) == (1.234, 0.567)
    assert judged_slos(parser.parse_args(["bench", "--tbt-slo-ms", "80"])) == (1.234, 0.08)
    helps = subcommands()
    for command in ("serve", "bench"):
        text = helps[command].format_help()
        assert "1234" in text and "567" in text, command
    for command in ("simulate", "capacity"):  # they differ, and say why, naming serve's values
        assert "TTFT 1234 ms, TBT 567 ms" in " ".join(helps[command].format_help().split())
    perf = load_profile("cpu-smollm2").perf_model
    assert slo_rule("serve").slos([5, 900], perf, np.random.default_rng(0)) == [SLO(1.234, 0.567)] * 2


def test_the_server_and_the_readme_state_the_same_defaults():
    from ascendra.server.app import ServerConfig

    fields = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    assert (fields["ttft_slo_ms"], fields["tbt_slo_ms"]) == (DEFAULT_SLO.ttft_ms, DEFAULT_SLO.tbt_ms)
    readme = README.read_text()
    example = f'"ttft_slo_ms": {DEFAULT_SLO.ttft_ms:g}, "tbt_slo_ms": {DEFAULT_SLO.tbt_ms:g}'
    assert example in readme  # the client example sends the defaults, and says so
    assert f"--ttft-slo-ms {DEFAULT_SLO.ttft_ms:g} --tbt-slo-ms {DEFAULT_SLO.tbt_ms:g}" in readme
