"""Run preprocessing's jobs on every core, or on a Dask cluster, through joblib (no home-made pool).

Each job runs single-threaded (SimpleITK, and the BLAS/OpenMP pools through threadpoolctl): N workers use
N cores without oversubscribing them, and a job's result does not depend on how many ran beside it. ITK's
multi-threaded N4 and registration sum in a thread-dependent order, so their results change in the last
digits with the thread count (and even between runs); one thread per job makes the cache byte-identical
for any number of workers, on one machine or a cluster.

``workers``: local processes (joblib's loky backend); None = the cores this process may run on. With
``scheduler`` (a Dask scheduler address), joblib's Dask backend sends the jobs to that cluster's workers,
which must import oncodiff and read the cohort at the same paths.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from oncodiff.errors import ConfigError

CONNECT_TIMEOUT_S = 20  # how long to wait for the Dask scheduler at data.scheduler


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; e.g. a SLURM or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextmanager
def single_threaded():
    """SimpleITK, BLAS/OpenMP (and torch, when loaded) on one thread inside the block."""
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    itk_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_before)
        if torch is not None:
            torch.set_num_threads(torch_before)


def _call(fn: Callable, index: int, args: tuple) -> tuple[int, Any]:
    with single_threaded():
        return index, fn(*args)


def run_jobs(fn: Callable, jobs: Sequence[tuple], workers: int | None = None, scheduler: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed in parallel, in the jobs' order.

    ``progress(done, total)`` is called in this process as each job finishes, whichever worker ran it.
    """
    total = len(jobs)
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"data.preprocess_workers={workers}: give 1 or more (or null for every core)")
    results: dict[int, Any] = {}

    def collect(finished) -> list[Any]:
        for index, result in finished:
            results[index] = result
            if progress is not None:
                progress(len(results), total)
        return [results[i] for i in range(total)]

    if scheduler is None and (workers == 1 or total <= 1):
        return collect(_call(fn, i, job) for i, job in enumerate(jobs))

    import joblib

    calls = (joblib.delayed(_call)(fn, i, job) for i, job in enumerate(jobs))
    if scheduler is None:
        parallel = joblib.Parallel(n_jobs=min(workers, total), batch_size=1, return_as="generator_unordered")
        return collect(parallel(calls))
    with _dask_client(scheduler), joblib.parallel_config(backend="dask"):
        return collect(joblib.Parallel(batch_size=1, return_as="generator_unordered")(calls))


@contextmanager
def _dask_client(address: str):
    try:
        from distributed import Client
    except ImportError as error:
        raise ConfigError(f"data.scheduler={address} needs Dask's distributed package: "
                          "pip install 'oncodiff[cluster]' (or pip install distributed)") from error
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as error:
        raise ConfigError(f"data.scheduler={address}: cannot reach the Dask scheduler ({error}); start one with "
                          "`dask scheduler` and workers with `dask worker ADDRESS`, or leave data.scheduler unset "
                          "to preprocess on this machine") from error
    try:
        yield client
    finally:
        client.close()
