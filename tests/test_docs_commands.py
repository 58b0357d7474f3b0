"""The documentation's commands exist as written: every ``polycl_*`` command in a fenced shell block of README.md and
documentation/*.md is a console script of pyproject.toml, and every flag it is given appears in that command's (or
subcommand's) ``--help``. The links between the pages point at files that exist.

Commands are found across ``\\`` line continuations, after ``|``, ``&&``, ``||``, ``;`` and inside ``$( )``;
``$(which polycl_x) ARGS`` counts as ``polycl_x ARGS``; ``# comments`` are ignored.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "documentation").glob("*.md"))]
SHELL_FENCE = re.compile(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", re.M | re.S)
COMMAND = re.compile(r"(?:^|(?<=[\s;|&(`\"']))(polycl_[a-z_]+)(?=$|[\s;|&)`\"'])")
FLAG = re.compile(r"^--?[A-Za-z][\w-]*")


def console_scripts() -> set[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["scripts"])


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """``(line number, logical line)`` of every fenced shell block of ``page``: continuations joined, comments cut."""
    text = page.read_text()
    out = []
    for block in SHELL_FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        pending, start = "", first_line
        for offset, raw in enumerate(block.group(1).splitlines()):
            line = _strip_comment(raw)
            if not pending:
                start = first_line + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            out.append((start, pending + line))
            pending = ""
        if pending:
            out.append((start, pending))
    return out


def _strip_comment(line: str) -> str:
    """The line without a ``#`` comment (a ``#`` at the start or after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def commands_in(line: str) -> list[tuple[str, list[str]]]:
    """``(command, its arguments)`` of every ``polycl_*`` command in a logical shell line."""
    line = re.sub(r"\$\(\s*which\s+(polycl_[a-z_]+)\s*\)", r"\1", line)
    found = []
    for match in COMMAND.finditer(line):
        rest = re.split(r"\|\||&&|[|;)`]|\$\(", line[match.end():], maxsplit=1)[0]
        try:
            args = shlex.split(rest)
        except ValueError:  # an unbalanced quote of the surrounding line (e.g. the rest of "$(polycl_env)")
            args = rest.split()
        found.append((match.group(1), args))
    return found


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """``(where, command, arguments)`` for every polycl_* command of the documentation."""
    return [(f"{page.relative_to(REPO)}:{number}", command, args)
            for page in PAGES for number, line in shell_lines(page) for command, args in commands_in(line)]


@cache
def help_text(command: str, subcommand: str | None = None) -> str:
    """``<command> [subcommand] --help``, run through the command's console-script entry point (the function
    ``pyproject.toml`` names) in this process: the imports are shared, so all help texts take seconds, not minutes."""
    entry = next((e for e in entry_points(group="console_scripts") if e.name == command), None)
    assert entry is not None, f"{command} is not installed: pip install -e . again"
    argv = [command, *([subcommand] if subcommand else []), "--help"]
    out, saved = io.StringIO(), sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            entry.load()()
    finally:
        sys.argv = saved
    assert exit_.value.code in (0, None), f"{' '.join(argv)} exited {exit_.value.code}"
    return out.getvalue()


def subcommand_of(command: str, args: list[str]) -> str | None:
    """The subcommand (``polycl_demo make-dataset``): the first positional argument of a command with subcommands."""
    usage = help_text(command).split("\n\n")[0]
    if not re.search(r"(?:[A-Z_]+|\{[\w,-]+\}) \.\.\.\s*$", usage):  # argparse subparsers: "COMMAND ..." at the end
        return None
    return next((a for a in args if not a.startswith("-")), None)


def flags_of(args: list[str]) -> list[str]:
    """The options among ``args`` (``--name=value`` counts as ``--name``; negative numbers are values)."""
    return [m.group(0) for a in args if (m := FLAG.match(a))]


def unknown_flags(command: str, args: list[str]) -> list[str]:
    subcommand = subcommand_of(command, args)
    text = help_text(command, subcommand)
    return [f for f in flags_of(args) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]


def test_the_documentation_has_polycl_commands_to_check():
    commands = documented_commands()
    assert {c for _, c, _ in commands} >= {"polycl_pretrain", "polycl_probe", "polycl_experiment", "polycl_evaluate",
                                          "polycl_demo", "polycl_env", "polycl_benchmark"}
    assert len(PAGES) > 1 and all(page.is_file() for page in PAGES)


def test_every_documented_polycl_command_and_flag_exists():
    commands = documented_commands()
    scripts = console_scripts()
    missing = [f"{where}: {command} is not a console script of pyproject.toml" for where, command, _ in commands
               if command not in scripts]
    assert not missing, "\n".join(missing)
    stale = [f"{where}: {command} {' '.join(args)}\n    unknown flag(s) {', '.join(bad)} (not in "
             f"`{' '.join(filter(None, (command, subcommand_of(command, args), '--help')))}`)"
             for where, command, args in commands if (bad := unknown_flags(command, args))]
    assert not stale, "flags the commands do not have:\n" + "\n".join(stale)


@pytest.mark.parametrize("line, expected", [
    ("polycl_pretrain -d 3 --epochs 2  # a comment --not-a-flag", [("polycl_pretrain", ["-d", "3", "--epochs", "2"])]),
    ('eval "$(polycl_env)"', [("polycl_env", [])]),
    ("cat x | polycl_probe F --random 5 && polycl_evaluate -ref R", [("polycl_probe", ["F", "--random", "5"]),
                                                                      ("polycl_evaluate", ["-ref", "R"])]),
    ("torchrun --nproc-per-node 2 $(which polycl_pretrain) -d 3", [("polycl_pretrain", ["-d", "3"])]),
    ("ls $nnUNet_preprocessed/D/polycl_unlabelled__x nnunet_polycl.benchmark", []),
])
def test_commands_are_found_in_a_shell_line(line, expected):
    assert commands_in(_strip_comment(line)) == expected


def test_subcommands_get_their_own_help():
    assert subcommand_of("polycl_demo", ["make-dataset", "-d", "990"]) == "make-dataset"
    assert subcommand_of("polycl_pretrain", ["-d", "003", "-s", "S"]) is None  # {S,O,M,simclr}: choices
    assert unknown_flags("polycl_demo", ["make-dataset", "--num-scans", "40", "--made-up"]) == ["--made-up"]


def test_continuations_join_into_one_command(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```bash\npolycl_pretrain -d 3 \\\n    --made-up  # comment\nnext\n```\n")
    assert [(n, line.split()) for n, line in shell_lines(page)] == [(3, ["polycl_pretrain", "-d", "3", "--made-up"]),
                                                                    (5, ["next"])]
    assert unknown_flags("polycl_pretrain", commands_in(shell_lines(page)[0][1])[0][1]) == ["--made-up"]


def test_every_page_is_linked_from_the_readme_and_every_relative_link_exists():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"documentation/{p.name}" not in readme]
    assert not unlinked, f"pages not linked from README.md: {unlinked}"
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+://", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
