"""The documented set-up makes nnU-Net find the PolyCL trainers, for an editable and for a wheel install."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from os.path import dirname, join
from pathlib import Path

import pytest

from nnunet_polycl.environment import HOOK_BEGIN, export_line, install_activate_hook, trainer_directory

REPO = Path(__file__).resolve().parents[1]
BIN = dirname(sys.executable)
FIND = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
        "import nnunet_polycl; cls = find('{name}'); print('FOUND', cls.__module__, cls.__name__, "
        "nnunet_polycl.__file__)")


def clean_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment: no nnUNet_* variables, this venv's commands first on PATH."""
    env = {"PATH": BIN + os.pathsep + "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh bash outside the repository (so that ``python -c`` cannot import the checkout)."""
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())


def test_trainer_not_found_without_setup():
    proc = bash(f'python -c "{FIND.format(name="nnUNetTrainerPolyCL")}"', clean_env())
    assert proc.returncode != 0
    assert "Could not find requested nnunet trainer nnUNetTrainerPolyCL" in proc.stderr


@pytest.mark.parametrize("name", ["nnUNetTrainerPolyCL", "nnUNetTrainerPolyCL_S_smoke", "nnUNetTrainerPolyCL_Baseline"])
def test_documented_line_makes_trainers_discoverable(name):
    proc = bash(f'eval "$(polycl_env)"; python -c "{FIND.format(name=name)}"', clean_env())
    assert proc.returncode == 0, proc.stderr
    found = proc.stdout.strip().splitlines()[-1].split()
    assert found[:3] == ["FOUND", found[1], name]
    assert found[1].startswith("nnunet_polycl.finetuning"), "class must come from the installed package, not a copy"


def test_documented_line_appends_to_existing_value_once(tmp_path):
    other = str(tmp_path / "my_trainers")
    os.mkdir(other)
    proc = bash('eval "$(polycl_env)"; eval "$(polycl_env)"; echo "$nnUNet_extTrainer"',
                clean_env(nnUNet_extTrainer=other))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(os.pathsep) == [trainer_directory(), other]


def test_activate_hook_is_idempotent_and_works(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("export VIRTUAL_ENV=somewhere\n")
    install_activate_hook(str(venv))
    install_activate_hook(str(venv))
    text = (venv / "bin" / "activate").read_text()
    assert text.count(HOOK_BEGIN) == 1 and export_line() in text
    assert text.startswith("export VIRTUAL_ENV=somewhere\n")
    proc = bash(f'source "{venv}/bin/activate"; echo "$nnUNet_extTrainer"', clean_env())
    assert proc.stdout.strip() == trainer_directory()


def test_polycl_env_without_venv_gives_clear_error(tmp_path):
    proc = bash(f'polycl_env --activate-hook "{tmp_path}/nope"', clean_env())
    assert proc.returncode != 0
    assert "virtual environment" in proc.stderr and "Traceback" not in proc.stderr


def wheel_venv(root: Path) -> Path:
    """A new virtual environment that sees this environment's dependencies but not its editable nnunet_polycl."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"]
    # A plain path line: the dependencies' folder joins sys.path, but its .pth files (the editable finder) do not run.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_install_ships_all_stages_and_is_discoverable(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("nnunet_polycl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnunet_polycl/pretraining/cli.py" in names
    assert "nnunet_polycl/trainers/nnUNetTrainerPolyCL.py" in names
    assert not any(n.startswith(("pretraining/", "trainers/", "tests/")) for n in names), "no generic top-level names"
    venv = wheel_venv(tmp_path)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = clean_env(PATH=f"{venv}/bin{os.pathsep}/usr/bin:/bin")
    proc = bash(f'eval "$(polycl_env)"; echo "$nnUNet_extTrainer"; '
                f'python -c "{FIND.format(name="nnUNetTrainerPolyCL")}"', env)
    assert proc.returncode == 0, proc.stderr
    ext_dir, found = proc.stdout.strip().splitlines()[0], proc.stdout.strip().splitlines()[-1].split()
    assert ext_dir.startswith(str(venv)) and ext_dir.endswith(join("nnunet_polycl", "trainers"))
    assert found[0] == "FOUND" and found[2] == "nnUNetTrainerPolyCL"
    assert found[3].startswith(str(venv)), "the wheel's copy must be the one imported"
