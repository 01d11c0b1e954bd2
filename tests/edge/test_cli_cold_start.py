"""``edge COMMAND`` imports only that command's module; ``edge --help`` still lists every command."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest

from tests.edge.helpers import ROOT, edge_cli

OTHER_COMMANDS = ("convert", "push_model", "collect", "simulate", "bench", "doctor", "fleet", "outbox")

PARSE_ONLY = """
import json, sys
from edge.cli import build_parser
args = build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith("edge.cli.commands."))
print(json.dumps({"command": args.command, "handler": args.handler.__module__, "loaded": loaded}))
"""


def _parse_in_fresh_process(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_run_imports_only_the_run_command(tmp_path):
    parsed = _parse_in_fresh_process("-v", "run", str(tmp_path / "m.tflite"), str(tmp_path / "x.png"))
    assert parsed["command"] == "run" and parsed["handler"] == "edge.cli.commands.run"
    assert parsed["loaded"] == ["edge.cli.commands.run"]
    for name in OTHER_COMMANDS:
        assert f"edge.cli.commands.{name}" not in parsed["loaded"]


def test_a_dashed_command_finds_its_module():
    argv = ("push-model", "pkg.edgepkg", "--mqtt", "mqtt://127.0.0.1:1", "--group", "g")
    parsed = _parse_in_fresh_process(*argv)
    assert parsed["command"] == "push-model" and parsed["loaded"] == ["edge.cli.commands.push_model"]
    assert _parse_in_fresh_process("config", "profiles")["loaded"] == ["edge.cli.commands.config"]


def test_help_lists_every_command_without_importing_them():
    from edge.cli import command_modules

    names = [module.NAME for module in command_modules()]
    code = (
        "import sys\n"
        "from edge.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('edge.cli.commands.')), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[]"
    listed = re.findall(r"^    (\S+)", done.stdout, re.M)  # one line per command (help wraps deeper)
    assert listed == sorted(names) and len(names) >= 12
    for module in command_modules():
        assert module.HELP.split(":")[0] in " ".join(done.stdout.split())


def test_the_cheap_registry_matches_the_modules():
    from edge.cli import command_infos

    for info in command_infos():
        module = importlib.import_module(info.module)
        assert (info.name, info.help) == (module.NAME, module.HELP)


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["nosuch"], 2, "invalid choice: 'nosuch' (choose from 'bench', 'collect', 'config'"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["-vv", "nosuch"], 2, "invalid choice: 'nosuch'"),
        (["run", "--no-such-flag", "x.tflite"], 2, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_errors_and_exit_codes_are_argparse_s(argv, code, text):
    done = edge_cli(*argv)
    assert done.returncode == code
    assert text in done.stderr and "Traceback" not in done.stderr


def test_version_and_help_before_a_command():
    from edge import __version__

    version = edge_cli("--version", "run")
    assert version.returncode == 0 and version.stdout.strip() == f"edge {__version__}"
    top = edge_cli("-h", "run")
    assert top.returncode == 0 and "push-model" in top.stdout and "convert" in top.stdout
    sub = edge_cli("run", "--help")
    assert sub.returncode == 0 and "--watch DIR" in sub.stdout


def test_build_parser_without_argv_knows_every_command():
    """What tools that parse many command lines use (the deploy guide's test): every subparser, in full."""
    import argparse

    from edge.cli import build_parser, command_infos

    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(subparsers.choices) == [info.name for info in command_infos()]
    for sub in subparsers.choices.values():
        assert callable(sub.get_default("handler")) and len(sub._actions) > 1


def test_adding_a_command_is_adding_one_file(tmp_path, monkeypatch, capsys):
    """A new file in the commands folder is a command, even one not named after its NAME."""
    import edge.cli
    import edge.cli.commands
    from edge.cli import main

    folder = tmp_path / "commands"
    folder.mkdir()
    (folder / "say_hello.py").write_text(
        "NAME = 'hello'\n"
        "HELP = (\n    'greet: '\n    'print hello'\n)\n"
        "def add_arguments(parser):\n    parser.add_argument('who')\n"
        "def run(args):\n    print('hello', args.who)\n    return 0\n"
    )
    monkeypatch.setattr(edge.cli, "COMMANDS_DIR", folder)
    monkeypatch.setattr(edge.cli.commands, "__path__", [str(folder)])
    monkeypatch.delitem(sys.modules, "edge.cli.commands.say_hello", raising=False)
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "greet: print hello" in capsys.readouterr().out
    sys.modules.pop("edge.cli.commands.say_hello", None)
