"""Run independent tasks in spawned worker processes with a progress bar; results come back in task order."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from biomed_llama.procs import die_with_parent

# Lazy imports: rich is imported where the progress bar is drawn: spawned workers never load it.

T = TypeVar("T")
R = TypeVar("R")


def map_ordered(fn: Callable[[T], R], tasks: Sequence[T], workers: int, label: str) -> list[R]:
    """Return [fn(t) for t in tasks], computed in `workers` processes when > 1 (in-process otherwise).

    `fn` must be a module-level function and the tasks picklable. Processes are spawned, not
    forked (safe next to threads, same on every OS), and die with this process (`procs`). The
    first exception cancels the tasks not yet started and is re-raised; results never depend on
    completion order.
    """
    from rich.console import Console
    from rich.progress import Progress

    results: list[R | None] = [None] * len(tasks)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(label, total=len(tasks))
        if workers <= 1 or len(tasks) <= 1:
            for i, t in enumerate(tasks):
                results[i] = fn(t)
                progress.advance(bar)
            return results  # type: ignore[return-value]

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            try:
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    progress.advance(bar)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return results  # type: ignore[return-value]
