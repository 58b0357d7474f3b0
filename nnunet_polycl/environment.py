"""``polycl_env``: the one line that lets ``nnUNetv2_train`` / ``nnUNetv2_predict`` find the PolyCL trainers.

nnU-Net (>= 2.8) searches the directories listed in ``nnUNet_extTrainer`` for trainer classes. This command prints a
shell line that adds this package's ``trainers`` directory to that variable, keeping any value already there. Also
what the process may use of this machine (:func:`available_cpus`).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from os.path import dirname, isfile, join
from typing import Any, ContextManager

HOOK_BEGIN = "# >>> nnunet-polycl: nnUNet_extTrainer >>>"
HOOK_END = "# <<< nnunet-polycl: nnUNet_extTrainer <<<"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports it), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def trainer_directory() -> str:
    """The installed directory of thin trainer modules (editable install: the repository's ``trainers/``)."""
    import nnunet_polycl.trainers

    return dirname(os.path.abspath(nnunet_polycl.trainers.__file__))


def export_line(directory: str | None = None) -> str:
    """A POSIX shell line that prepends ``directory`` to ``nnUNet_extTrainer`` unless it is already listed."""
    d = directory or trainer_directory()
    return (f'case ":${{nnUNet_extTrainer:-}}:" in *":{d}:"*) ;; '
            f'*) export nnUNet_extTrainer="{d}${{nnUNet_extTrainer:+:$nnUNet_extTrainer}}" ;; esac')


def install_activate_hook(venv: str) -> str:
    """Append :func:`export_line` to ``<venv>/bin/activate`` once; returns the script's path."""
    script = join(venv, "bin", "activate")
    if not isfile(script):
        raise FileNotFoundError(f"{script} does not exist: pass the folder of a virtual environment.")
    with open(script) as f:
        text = f.read()
    if HOOK_BEGIN in text:
        start, end = text.index(HOOK_BEGIN), text.index(HOOK_END) + len(HOOK_END)
        text = text[:start].rstrip("\n") + text[end:]
    text = text.rstrip("\n") + f"\n{HOOK_BEGIN}\n{export_line()}\n{HOOK_END}\n"
    with open(script, "w") as f:
        f.write(text)
    return script


ABSENT = object()  # for temporary_items: the key is removed (or was not there)


def _put(mapping: MutableMapping, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if value is ABSENT:
            mapping.pop(key, None)
        else:
            mapping[key] = value


@contextmanager
def temporary_items(mapping: MutableMapping, values: Mapping[str, Any]) -> Iterator[None]:
    """Set the keys of ``mapping`` to ``values`` (:data:`ABSENT`: remove) for the block, then restore the previous
    values (or their absence)."""
    saved = {key: mapping.get(key, ABSENT) for key in values}
    _put(mapping, values)
    try:
        yield
    finally:
        _put(mapping, saved)


def temporary_environment(values: Mapping[str, str]) -> ContextManager[None]:
    """Set environment variables for the block, then restore the previous values (or their absence)."""
    return temporary_items(os.environ, values)


def env_entry(argv: list[str] | None = None) -> None:
    """Command line of ``polycl_env``."""
    parser = argparse.ArgumentParser(
        prog="polycl_env",
        description="Print the shell line that makes nnU-Net find the PolyCL trainers. Use it as "
                    "eval \"$(polycl_env)\" or put its output in your ~/.bashrc.")
    parser.add_argument("--activate-hook", nargs="?", const=os.environ.get("VIRTUAL_ENV", sys.prefix),
                        metavar="VENV", default=None,
                        help="instead of printing, add the line to VENV/bin/activate (default: the active "
                             "virtual environment) so every shell that activates it has the trainers")
    parser.add_argument("--dir", action="store_true", help="print only the trainers directory")
    args = parser.parse_args(argv)
    if args.dir:
        print(trainer_directory())
    elif args.activate_hook:
        try:
            print(f"nnUNet_extTrainer set-up added to {install_activate_hook(args.activate_hook)}")
        except FileNotFoundError as e:
            parser.error(str(e))
    else:
        print(export_line())
