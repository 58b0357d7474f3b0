"""Multi-process pre-training (torch DDP, gloo on the CPU): the same run as one process, rank 0 alone writes, a dead
rank stops the run, --c with the same or another number of processes, and bad input refused before writing."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_polycl.paths import PolyCLUserError
from tests.conftest import BIN, run_cli, smoke_env
from tests.pretraining.conftest import (
    RESULT_METRICS,
    S_ARGS,
    S_EPOCHS,
    SMALL_ID,
    SMALL_NAME,
    copy_preprocessed,
    s_folder,
    smallest_cases,
)

# Loader workers would double the processes on 2 cores: the ranks of these runs load in their own process.
DDP = ["-num_gpus", "2", "--allow-cpu-ddp", "--num-workers", "0"]
# PolyCL-O needs slices with and without the organ: all slices of the two scans (33, batches of 12 + 12 + 9).
O_ARGS = ["-d", str(SMALL_ID), "-f", "all", "-s", "O", "-device", "cpu", "--batch-size", "12",
          "--slice-fraction", "1.0", "--num-workers", "0", "--epochs", "2"]
RUN_FILES = {"checkpoint_latest.pth", "checkpoint_final.pth", "pretrained_weights.pth", "config.json",
             "training_log.txt", "progress.png"}


def final(folder: Path) -> dict:
    return torch.load(folder / "checkpoint_final.pth", weights_only=False)


def results_of(ckpt: dict) -> dict[str, list[float]]:
    return {k: ckpt["history"][k] for k in RESULT_METRICS}


def assert_same_history(ckpt: dict, reference: dict, exact: bool) -> None:
    ours, theirs = results_of(ckpt), results_of(reference)
    if exact:
        assert ours == theirs
    else:  # another number of processes adds the gradients in another order: float tolerance
        for key in RESULT_METRICS:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)


def epoch_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r": Epoch (\d+)/\d+: loss", text)]


# --- the loss of a global batch, split across 2 gloo processes (unequal shards), equals the 1-process loss ---

OBJECTIVE_BATCH = 5  # split across 2 ranks as 3 + 2 rows


def _objectives():
    from nnunet_polycl.pretraining.objectives import SimCLRObjective, TripletObjective

    return {"triplet": TripletObjective(0.2), "simclr": SimCLRObjective(0.2)}


def _embeddings(name: str) -> torch.Tensor:
    views = _objectives()[name].views
    return torch.randn(views * OBJECTIVE_BATCH, 8, generator=torch.Generator().manual_seed(views))


def _objective_rank(rank: int, world: int, init_method: str, results) -> None:
    import torch.distributed as dist

    from nnunet_polycl.pretraining.sharding import BatchShard

    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        shard = BatchShard.of(OBJECTIVE_BATCH, rank, world)
        for name, objective in _objectives().items():
            rows = [part[shard.start:shard.stop] for part in _embeddings(name).chunk(objective.views)]
            z = torch.cat(rows).requires_grad_()
            share, sums = objective(z, shard)
            share.backward()
            results.put((name, rank, share.item(), sums.numpy(), z.grad.numpy()))  # numpy: copied, not shared
    finally:
        dist.destroy_process_group()


def test_objective_shares_and_gradients_add_up_to_the_global_batch():
    """Each rank's loss share, metric sums and gradient (SimCLR: through the gathered negatives) add up to those of
    the whole batch in one process."""
    import torch.multiprocessing as torch_mp

    from nnunet_polycl.pretraining.launch import free_port
    from nnunet_polycl.pretraining.sharding import BatchShard

    results = torch_mp.get_context("spawn").SimpleQueue()
    torch_mp.spawn(_objective_rank, args=(2, f"tcp://127.0.0.1:{free_port()}", results), nprocs=2, join=True)
    got = {}
    for _ in range(4):
        name, rank, share, sums, grad = results.get()
        got[name, rank] = share, torch.from_numpy(sums), torch.from_numpy(grad)
    for name, objective in _objectives().items():
        z = _embeddings(name).requires_grad_()
        loss, sums = objective(z, BatchShard.of(OBJECTIVE_BATCH))
        loss.backward()
        (share0, sums0, grad0), (share1, sums1, grad1) = got[name, 0], got[name, 1]
        assert share0 + share1 == pytest.approx(loss.item(), rel=1e-6), name
        torch.testing.assert_close(sums0 + sums1, sums)
        views = objective.views
        by_view = [torch.cat([grad0.chunk(views)[v], grad1.chunk(views)[v]]) for v in range(views)]
        torch.testing.assert_close(torch.cat(by_view), z.grad)


def test_shards_of_a_global_batch_concatenate_to_it():
    from nnunet_polycl.pretraining.sharding import ShardedBatchSampler, shard_bounds
    from nnunet_polycl.pretraining.slice_data import EpochBatchSampler

    assert shard_bounds(5, 2) == ((0, 3), (3, 5)) and shard_bounds(4, 4) == ((0, 1), (1, 2), (2, 3), (3, 4))
    batches = EpochBatchSampler(lambda epoch: np.arange(10) * (epoch + 1), 10, 4)
    batches.set_epoch(1)
    shards = [list(ShardedBatchSampler(batches, rank, 2)) for rank in (0, 1)]
    for whole, first, second in zip(batches, *shards, strict=True):
        assert first.number == second.number == whole.number and first.epoch == whole.epoch == 1
        assert np.concatenate([first.rows, second.rows]).tolist() == whole.rows.tolist()


# --- real runs through the command line ---

@pytest.fixture(scope="module")
def s_two_processes(small_demo_root, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``S_ARGS`` for ``S_EPOCHS`` epochs in 2 processes (gloo), with the 1-process run's global batch."""
    results = tmp_path_factory.mktemp("s_ddp")
    proc = run_cli(["polycl_pretrain", *S_ARGS, "--epochs", str(S_EPOCHS), *DDP], smoke_env(small_demo_root, results))
    return s_folder(results), proc


@pytest.mark.e2e
def test_two_processes_reproduce_the_single_process_run_s(s_two_processes, s_reference):
    folder, _ = s_two_processes
    assert_same_history(final(folder), final(s_reference), exact=False)
    assert final(folder)["epoch"] == S_EPOCHS


@pytest.mark.e2e
def test_two_processes_under_torchrun_reproduce_the_single_process_run_o(small_demo_root, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = smoke_env(small_demo_root, tmp_path / "results")
    run_cli(["polycl_pretrain", *O_ARGS, "-o", str(one)], env)
    proc = run_cli(["torchrun", "--standalone", "--nproc-per-node", "2", os.path.join(BIN, "polycl_pretrain"), *O_ARGS,
                    "--allow-cpu-ddp", "-o", str(two)], env)
    assert epoch_numbers(proc.stdout) == [1, 2]  # rank 0 alone reports
    assert_same_history(final(two), final(one), exact=False)
    assert json.loads((two / "config.json").read_text())["processes"] == 2


STRESS_RUNS = 2  # per strategy
STRESS_S_ARGS = ["-d", str(SMALL_ID), "-f", "all", "-s", "S", "-device", "cpu", "--batch-size", "4",
                 "--slice-fraction", "0.2", "--num-workers", "0", "--epochs", "2"]


@pytest.mark.e2e
def test_two_process_torchrun_runs_end_cleanly_on_a_busy_machine(small_demo_root, tmp_path):
    """Issue 18: under load, a rank that left right after the last epoch could abort in gloo's teardown (SIGABRT).
    Runs of S and O, each repeated, with two busy CPU loops beside them: every run ends with status 0 and complete
    final files."""
    env = smoke_env(small_demo_root, tmp_path / "results")
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for attempt in range(STRESS_RUNS):
            for strategy, args in (("S", STRESS_S_ARGS), ("O", O_ARGS)):
                folder = tmp_path / f"{strategy}_{attempt}"
                proc = run_cli(["torchrun", "--standalone", "--nproc-per-node", "2",
                                os.path.join(BIN, "polycl_pretrain"), *args, "--allow-cpu-ddp", "-o", str(folder)],
                               env, check=False)
                what = f"{strategy} run {attempt + 1}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
                assert proc.returncode == 0 and "terminate called" not in proc.stderr, what
                assert epoch_numbers(proc.stdout) == [1, 2] and final(folder)["epoch"] == 2, what
                assert torch.load(folder / "pretrained_weights.pth", weights_only=False)["polycl"]["epochs"] == 2
    finally:
        for process in load:
            process.kill()
            process.wait()


@pytest.mark.e2e
def test_only_rank_0_writes_files_and_logs(s_two_processes, s_reference):
    folder, proc = s_two_processes
    assert {p.name for p in folder.iterdir()} == RUN_FILES == {p.name for p in s_reference.iterdir()}
    assert sorted(p.relative_to(folder.parents[2]).as_posix() for p in folder.parents[2].rglob("*") if p.is_file()) \
        == sorted(f"{SMALL_NAME}/PolyCL_S__nnUNetPlans__2d/fold_all/{name}" for name in RUN_FILES)
    expected = list(range(1, S_EPOCHS + 1))
    assert epoch_numbers((folder / "training_log.txt").read_text()) == expected
    assert epoch_numbers(proc.stdout) == expected
    assert proc.stdout.count("pre-training of") == 1 and proc.stdout.count("Finished:") == 1
    assert "x 2 processes (DDP)" in proc.stdout
    assert json.loads((folder / "config.json").read_text())["processes"] == 2
    assert json.loads((s_reference / "config.json").read_text())["processes"] == 1


def _completed_epochs(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=False)["epoch"] if checkpoint.is_file() else 0


@pytest.mark.e2e
def test_a_killed_rank_stops_the_run_and_continue_with_2_or_1_processes(small_env, tmp_path, s_two_processes):
    reference = final(s_two_processes[0])
    folder = s_folder(Path(small_env["nnUNet_results"]))
    latest, log = folder / "checkpoint_latest.pth", tmp_path / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([os.path.join(BIN, "polycl_pretrain"), *S_ARGS, "--epochs", str(S_EPOCHS), *DDP],
                                env=small_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while _completed_epochs(latest) < 1:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
            rank0, rank1 = (int(p) for p in re.search(r"pids (\d+), (\d+)", log.read_text()).groups())
            os.kill(rank1, signal.SIGKILL)
            started = time.monotonic()
            assert proc.wait(timeout=120) == 1, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert time.monotonic() - started < 60  # the launcher stopped rank 0 (or it failed at its next all-reduce)
    assert not Path(f"/proc/{rank0}").exists()
    assert "rocess 1 of 2 was killed by SIGKILL" in log.read_text() and "--c" in log.read_text()
    at_kill = torch.load(latest, weights_only=False)
    assert 1 <= at_kill["epoch"] < S_EPOCHS and not (folder / "checkpoint_final.pth").exists()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)

    proc = run_cli(["polycl_pretrain", *S_ARGS, "--epochs", str(S_EPOCHS), *DDP, "--c"], small_env)
    assert f"after epoch {at_kill['epoch']}." in proc.stdout
    continued = final(folder)
    assert_same_history(continued, reference, exact=True)  # same processes: the very same run
    assert all(torch.equal(continued["model"][k], reference["model"][k]) for k in reference["model"])

    run_cli(["polycl_pretrain", *S_ARGS, "--epochs", str(S_EPOCHS), "--num-workers", "0", "--c", "-o", str(copy)],
            small_env)
    assert_same_history(final(copy), reference, exact=False)  # 1 process continues the 2-process run


def test_a_rank_failing_after_the_last_epoch_is_reported_with_its_signal_and_the_final_files(tmp_path):
    from nnunet_polycl.pretraining.launch import failure_message

    started = time.time() - 5
    for name in ("checkpoint_final.pth", "pretrained_weights.pth"):
        (tmp_path / name).write_bytes(b"written by rank 0")
    message = failure_message({1: -signal.SIGABRT}, 2, str(tmp_path), started)
    assert message.startswith("Process 1 of 2 was killed by SIGABRT")
    assert "after the last epoch" in message and str(tmp_path / "pretrained_weights.pth") in message
    older = failure_message({1: 1}, 2, str(tmp_path), time.time() + 5)  # final files of an earlier run
    assert older.startswith("Process 1 of 2 exited with status 1") and "continue with --c" in older


# --- bad input: refused before anything is written ---

@pytest.fixture
def small_in_process(small_env, monkeypatch) -> Path:
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, small_env[key])
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    return Path(small_env["nnUNet_results"])


TINY = dict(fold="all", strategy="S", device="cpu", epochs=1, batch_size=4, slice_fraction=0.2, num_workers=0)


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(num_gpus=2), ["-num_gpus 2 with -device cpu", "for tests", "--allow-cpu-ddp", "-num_gpus 1"]),
    (dict(num_gpus=3, allow_cpu_ddp=True), ["--batch-size 4 does not divide across 3 processes",
                                            "--batch-size 3 or 6"]),
    (dict(num_gpus=4, allow_cpu_ddp=True), ["last batch has 2 triplets, fewer than the 4 processes"]),
    (dict(num_gpus=0), ["-num_gpus must be >= 1 (got 0)"]),
])
def test_bad_process_counts_are_refused_before_writing(small_in_process, kwargs, fragments):
    from nnunet_polycl.pretraining.cli import run_pretraining

    with pytest.raises(PolyCLUserError) as error:
        run_pretraining(SMALL_ID, **{**TINY, **kwargs})
    for fragment in fragments:
        assert fragment in str(error.value)
    assert list(small_in_process.iterdir()) == []


def test_more_processes_than_gpus_and_torchrun_mismatch_are_refused(small_in_process, monkeypatch):
    from nnunet_polycl.pretraining.cli import run_pretraining
    from nnunet_polycl.pretraining.distributed import check_process_count

    with pytest.raises(PolyCLUserError, match=rf"-num_gpus 9 but only {torch.cuda.device_count()} GPU\(s\)"):
        check_process_count(9, "cuda", allow_cpu_ddp=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PolyCLUserError, match="-num_gpus 3 under torchrun, which started 2 processes"):
        run_pretraining(SMALL_ID, **TINY, num_gpus=3)
    assert list(small_in_process.iterdir()) == []


@pytest.mark.e2e
def test_cli_refuses_cpu_processes_without_the_flag(small_env):
    proc = run_cli(["polycl_pretrain", *S_ARGS, "-num_gpus", "2"], small_env, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("polycl_pretrain: error: -num_gpus 2 with -device cpu")
    assert "Traceback" not in proc.stderr and list(Path(small_env["nnUNet_results"]).iterdir()) == []


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_continue_with_another_strategy_or_other_data_is_refused(small_in_process, s_reference, preprocessed_demo,
                                                                  tmp_path, monkeypatch):
    from nnunet_polycl.pretraining.cli import run_pretraining

    before = _digests(s_reference)
    same = dict(fold="all", device="cpu", epochs=S_EPOCHS, batch_size=4, slice_fraction=0.2, num_workers=1,
                output_folder=str(s_reference), continue_training=True)
    with pytest.raises(PolyCLUserError, match="strategy: checkpoint 'S', now 'simclr'"):
        run_pretraining(SMALL_ID, strategy="simclr", **same)

    other_root = tmp_path / "other"  # a dataset of the same name and plans, made of other cases
    copy_preprocessed(preprocessed_demo, other_root, SMALL_NAME, smallest_cases(preprocessed_demo, 3)[1:], False)
    monkeypatch.setenv("nnUNet_preprocessed", str(other_root / "preprocessed"))
    with pytest.raises(PolyCLUserError, match="it was trained on other data") as error:
        run_pretraining(SMALL_ID, strategy="S", **same)
    assert "case_ids: checkpoint" in str(error.value) and "--overwrite" in str(error.value)
    assert _digests(s_reference) == before
