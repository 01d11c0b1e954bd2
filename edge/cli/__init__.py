"""The ``edge`` command line: one module per subcommand in ``edge/cli/commands/``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``,
and keeps heavy imports (TensorFlow, the interpreter, paho) inside ``run`` so ``edge --help`` stays fast.
Adding a command is adding one file.

Start-up cost: when the command line names a command, only that command's module is imported and only its
subparser is built. ``edge --help``, no command or an unknown one list every command from the modules'
``NAME``/``HELP`` constants, read from their source without importing them. ``build_parser()`` without
argv builds the whole parser (every module imported), as tools that parse many command lines want.

Exit status: 0 success; 1 the command ran but something it checked failed (an input, a validation);
2 the command could not do its job (bad option, bad model, missing dependency).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from edge import __version__
from edge.errors import EdgeError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
COMMANDS_PACKAGE = "edge.cli.commands"
COMMANDS_DIR = Path(__file__).resolve().parent / "commands"
_CONSTANT = r"(NAME|HELP)\s*(?::\s*str\s*)?=\s*(.+)"
_MAX_CONSTANT_LINES = 20


class CommandInfo(NamedTuple):
    """A command as its module declares it: ``NAME``, ``HELP`` and the module's import name."""

    name: str
    help: str
    module: str


def _command_files() -> dict[str, Path]:
    """Module stem -> file for every command module (``_``-prefixed files are helpers), sorted."""
    files = {}
    with os.scandir(COMMANDS_DIR) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.partition(".")
            if dot and suffix == "py" and stem.isidentifier() and not stem.startswith("_"):
                files[stem] = Path(entry.path)
    return dict(sorted(files.items()))


def _constants(path: Path) -> dict[str, str]:
    """The module-level ``NAME = "..."`` and ``HELP = "..."`` string literals of a source file.

    Read with a line scan and ``ast.literal_eval`` (a literal may continue over lines), far cheaper than
    parsing or importing the module; a value that is not a plain string literal is left out.
    """
    import ast
    import re

    found: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        match = re.match(_CONSTANT, line)
        if match is None or match[1] in found:
            continue
        text = match[2]
        for more in [*lines[number + 1 : number + _MAX_CONSTANT_LINES], None]:
            try:
                value = ast.literal_eval(text)
            except (SyntaxError, ValueError):
                if more is None:
                    break
                text += "\n" + more
                continue
            if isinstance(value, str):
                found[match[1]] = value
            break
    return found


def command_infos() -> list[CommandInfo]:
    """Every command's name and help, sorted by name, without importing the command modules.

    A module whose ``NAME`` or ``HELP`` is not a plain string constant is imported to read them.
    """
    infos = []
    for stem, path in _command_files().items():
        module_name = f"{COMMANDS_PACKAGE}.{stem}"
        constants = _constants(path)
        if "NAME" not in constants or "HELP" not in constants:
            module = importlib.import_module(module_name)
            constants = {"NAME": module.NAME, "HELP": module.HELP}
        infos.append(CommandInfo(constants["NAME"], constants["HELP"], module_name))
    return sorted(infos, key=lambda info: info.name)


def command_modules() -> list[ModuleType]:
    """Every module in ``edge.cli.commands``, imported, sorted by command name."""
    modules = [importlib.import_module(f"{COMMANDS_PACKAGE}.{stem}") for stem in _command_files()]
    return sorted(modules, key=lambda module: module.NAME)


def command_word(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names when only ``-v``/``--verbose`` come before it; else None.

    None also for ``-h``, ``--version`` or anything else first: those need the whole parser.
    """
    for word in argv:
        if not word.startswith("-"):
            return word
        if word != "--verbose" and not (len(word) > 1 and word.strip("v") == "-"):  # -v, -vv: no effect
            return None
    return None


def find_command(name: str) -> ModuleType | None:
    """The command module whose ``NAME`` is ``name``, importing only that one; None when there is none.

    Tries the file named after the command (``push-model`` -> ``push_model.py``) first, then the file
    whose ``NAME`` constant says so.
    """
    guess = name.replace("-", "_")
    if guess in _command_files():
        module = importlib.import_module(f"{COMMANDS_PACKAGE}.{guess}")
        if getattr(module, "NAME", None) == name:
            return module
    for info in command_infos():  # a file not named after its command
        if info.name == name:
            return importlib.import_module(info.module)
    return None


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, sized without ``shutil``.

    argparse makes a formatter for every option it adds (to check the option's metavar), and its own sizes
    itself with ``shutil.get_terminal_size``: importing shutil (and bz2 and lzma with it) was 4 ms of every
    ``edge run``'s start-up. Same width rule: ``$COLUMNS``, else the terminal's, else 80; minus 2.
    """

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _base_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Edge inference runtime: convert, inspect, run and update TFLite models.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    return parser, subparsers


def _add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], modules: Iterable[ModuleType]
) -> None:
    for module in modules:
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``edge`` parser: for ``argv`` (the arguments after the program name) as cheaply as it can be.

    - ``argv`` None: every command, every module imported;
    - ``argv`` names a known command: that command only (its module alone is imported);
    - no command or an unknown one (``edge --help``, ``edge nosuch``): every command listed by name and help
      for the usage, help and "invalid choice" messages, no module imported;
    - anything else (``edge -h run``, ``edge --version``): every command.
    """
    parser, subparsers = _base_parser()
    word = command_word(argv) if argv is not None else None
    module = find_command(word) if word is not None else None
    if module is not None:
        _add_commands(subparsers, [module])
        return parser
    infos = command_infos() if argv is not None else []
    if argv is not None and not any(info.name in argv for info in infos):
        for info in infos:  # listing only: parsing stops at the help, the missing or the invalid command
            subparsers.add_parser(
                info.name, help=info.help, description=info.help, formatter_class=HelpFormatter
            )
        return parser
    _add_commands(subparsers, command_modules())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    if getattr(args, "handler", None) is None:  # a listing parser accepted a command: parse it in full
        args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except EdgeError as exc:
        print(f"edge {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
