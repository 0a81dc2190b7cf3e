"""The command table of tracer/cli.py: every command has a home, and --help stays light."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from tracer.cli import COMMANDS, build_parser


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_every_command_has_exactly_one_home() -> None:
    assert _subcommands(build_parser()) == set(COMMANDS)
    for name, target in COMMANDS.items():
        module_name, _, function_name = target.partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        assert callable(function), name


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from tracer.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('bcc', 'textual', 'httptools', 'tracer.server.main')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
