"""``polycl_experiment`` stops cleanly: bad ``--pretrained`` files before any run starts, and SIGTERM / SIGINT end
its running ``nnUNetv2_train`` steps instead of orphaning them."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN, DEMO_ID, run_cli
from tests.finetuning.test_weights_are_data import write_crafted


def write_weights(folder: Path, strategy: str) -> Path:
    """A ``pretrained_weights.pth`` of the demo's fold 0 written by polycl_pretrain's own writer."""
    from nnunet_polycl.network import build_plans_network, load_plans_context
    from nnunet_polycl.paths import resolve_dataset_name
    from nnunet_polycl.pretraining.outputs import write_pretrained_weights
    from nnunet_polycl.pretraining.settings import PretrainSettings
    from nnunet_polycl.splits import training_cases

    ctx = load_plans_context(resolve_dataset_name(DEMO_ID))
    settings = PretrainSettings(ctx.dataset_name, "nnUNetPlans", "2d", 0, strategy, None, None, 1, 8, 1e-3, 0.125,
                                256, 1.0, 0, 0, "cpu")
    folder.mkdir(parents=True)
    encoder = build_plans_network(ctx).encoder.state_dict()
    return Path(write_pretrained_weights(str(folder), ctx, encoder, settings, 1,
                                         training_cases(ctx, 0, write_missing=False)[0]))


def test_given_weights_are_read_and_checked_before_anything_runs(demo_in_process, tmp_path):
    from nnunet_polycl.experiment.runner import ExperimentRequest, prepare
    from nnunet_polycl.paths import PolyCLUserError

    s_weights = write_weights(tmp_path / "S", "S")
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    crafted, marker = tmp_path / "crafted" / "pretrained_weights.pth", tmp_path / "payload_ran"
    write_crafted(crafted, marker, "torch.save")
    for given, expected in (({"O": str(random_bytes)}, f"--pretrained O={random_bytes}: Pre-trained weights file "
                                                       f"{random_bytes} cannot be read"),
                            ({"O": str(crafted)}, f"--pretrained O={crafted}: Pre-trained weights file {crafted} "
                                                  f"holds Python objects besides tensors and plain values "
                                                  f"(posix.system)"),
                            ({"S": str(s_weights), "O": str(s_weights)},
                             f"--pretrained O={s_weights}: The pre-trained weights {s_weights} were made with other "
                             f"settings than this fine-tuning run (strategy: pre-training 'S', this fine-tuning 'O')")):
        with pytest.raises(PolyCLUserError) as error:
            prepare(ExperimentRequest(dataset=str(DEMO_ID), output_folder=str(tmp_path / "exp"),
                                      methods=("baseline", "S", "O"), pretrained=given, progress=False))
        assert str(error.value).startswith(expected) and "\n" not in str(error.value)
        assert not (tmp_path / "exp").exists() and not marker.exists()
    prepare(ExperimentRequest(dataset=str(DEMO_ID), output_folder=str(tmp_path / "exp"), methods=("baseline", "S"),
                              pretrained={"S": str(s_weights)}, progress=False))  # a matching file is accepted


@pytest.mark.e2e
def test_random_bytes_as_given_weights_are_one_line_on_the_command_line(demo_env, tmp_path):
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = run_cli(["polycl_experiment", "-d", str(DEMO_ID), "--methods", "baseline", "O", "--pretrained",
                    f"O={random_bytes}", "-o", str(tmp_path / "exp"), "--no-progress"], demo_env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"polycl_experiment: error: --pretrained O={random_bytes}: Pre-trained "
                                                f"weights file {random_bytes} cannot be read (UnpicklingError: not a "
                                                f"file written by torch.save, or damaged). It is truncated, corrupted "
                                                f"or not a PyTorch file. Run polycl_pretrain again (it rewrites the "
                                                f"file) or point POLYCL_PRETRAINED_WEIGHTS at an intact copy."]
    assert not (tmp_path / "exp").exists()


def _children(pid: int, name: str) -> list[int]:
    """Processes whose parent is ``pid`` and whose command line mentions ``name`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and name in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except (ValueError, OSError, IndexError):
            continue
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize("sig, seeds, jobs", [(signal.SIGTERM, ("0", "1", "2"), 2), (signal.SIGINT, ("0",), 1)])
def test_a_signal_ends_the_running_nnunetv2_train_steps(demo_env, tmp_path, sig, seeds, jobs):
    """Two parallel steps and a queued run (the worker threads' path) for SIGTERM; one step in the main thread for
    SIGINT."""
    argv = [os.path.join(BIN, "polycl_experiment"), "-d", str(DEMO_ID), "--methods", "baseline", "--seeds", *seeds,
            "--k", "1", "--schedule", "smoke", "--jobs", str(jobs), "--no-progress", "-o", str(tmp_path / "exp")]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(argv, env=demo_env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 300
            while len(trainers := _children(proc.pid, "nnUNetv2_train")) < jobs:
                assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
                assert time.monotonic() < deadline, f"no {jobs} nnUNetv2_train step(s) within 300 s"
                time.sleep(0.2)
            proc.send_signal(sig)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == (
        f"polycl_experiment: stopped by {sig.name}; ended its running steps "
        f"({', '.join(['nnUNetv2_train'] * jobs)}). Finished runs are kept; run the same command again to "
        f"continue.")
    assert [pid for pid in trainers if _group_alive(pid)] == []  # each step and its workers are gone
    # a queued run is never started after the signal: no step line, no run folder, no log claiming a command ran
    queued = [f"seed{s}__" for s in seeds[jobs:]]
    assert not [line for line in stderr.splitlines() if any(q in line for q in queued)], stderr
    assert not [p.name for p in (tmp_path / "exp" / "runs").iterdir() if any(q in p.name for q in queued)]


_FORKED_CHILD = """
import os, signal, subprocess, time
from nnunet_polycl.experiment import process
step = subprocess.Popen(["sleep", "60"], start_new_session=True)  # as the runner starts its steps
process._running.add(step)  # a running step of this process, which a forked child must not end
process.stop_steps_on_signals()
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
time.sleep(0.5)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print("killed by", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, "step running", step.poll() is None)
step.kill()
"""


def test_a_forked_child_dies_of_sigterm_without_a_traceback_or_touching_the_runners_steps():
    """nnU-Net's fork-context pools (e.g. its raw-file listing) end their workers with SIGTERM when they close."""
    proc = subprocess.run([str(Path(BIN) / "python"), "-c", _FORKED_CHILD], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"killed by {int(signal.SIGTERM)} step running True"
    assert "StoppedBySignal" not in proc.stderr and "Traceback" not in proc.stderr
