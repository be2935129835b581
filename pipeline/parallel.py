"""Per-image work on every core: `map_images(fn, items, workers)` runs one function over a stream of items in a
process pool and yields the results in input order, so what a stage writes does not depend on the number of workers.

The stages whose work is image by image (proposals, pseudolabels, filter, merge's label maps, evaluate; the train
stage's dense CRF) pass each image's inputs as an item and get back what the main process gathers (a table row, a
confusion matrix). `fn` must be picklable: a module-level function, or a `functools.partial` of one whose bound
arguments pickle (the configuration, folders); it is sent to each worker once, the items chunk by chunk.

Workers are started by the "forkserver" method (a fresh server process forks them; "spawn" where there is none),
not by a plain fork of the stage: a stage that has already run OpenMP code (scikit-learn's k-means, torch) leaves
libgomp's thread pool in a state a forked child deadlocks on at its next parallel region (checked here: KMeans.fit
in the parent, KMeans.predict in a forked child hangs). Each worker runs BLAS and OpenMP on one thread: the pool is
the parallelism (n workers of n threads each would oversubscribe the cores).

Memory stays bounded: items are drawn from `items` lazily, at most 2 * workers chunks are in flight, so a generator
reading shards feeds the pool without the whole dataset being held (multiprocessing's own `Pool.imap` draws every
item at once).
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import traceback
from collections import deque
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_FN: Callable[[Any], Any] | None = None  # the worker's function, set once per worker by _install
_LIMITS: Any = None  # the worker's threadpoolctl limits, kept alive


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else os.cpu_count()), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """A `workers` setting -> worker processes: 0 = every core (`cores()`), n >= 1 = n (1: in the calling process)."""
    if workers < 0:
        raise ValueError(f"workers is {workers}; it must be 0 (every core) or a count >= 1")
    return workers or cores()


# Imported once by the fork server, so the workers it forks start with them loaded. Without this every worker
# imports them again: it re-runs the stage script, whose imports (torch, and the pipeline modules with scipy and
# matplotlib) took about 2.5 s per worker on busy cores here, which on a small stage is most of its time. Python's
# own "__main__" preload does not work on 3.11 (forkserver looks for a 'main_path' key the preparation data lacks),
# hence the modules by name: these, and every pipeline / stages module the calling process has imported when the
# server starts (its first pool). The server only imports: it runs no OpenMP code a fork could inherit.
PRELOAD = ("numpy", "torch", "cv2", "threadpoolctl")


def _preload() -> list[str]:
    return [*PRELOAD, *sorted(m for m in list(sys.modules) if m.split(".")[0] in ("pipeline", "stages"))]


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_preload())  # takes effect when the server starts (a missing module is skipped)
    return ctx


def _install(fn: Callable[[Any], Any]) -> None:
    """Pool initializer: keep `fn`, and run BLAS / OpenMP on one thread in this worker."""
    global _FN, _LIMITS
    _FN = fn
    from threadpoolctl import threadpool_limits

    _LIMITS = threadpool_limits(1)


class WorkerError(RuntimeError):
    """A worker's exception that could not travel back to the caller as itself (see `_run_chunk`)."""


def _run_chunk(chunk: list) -> list:
    """fn over one chunk, in a worker. An exception must come back through a pickle: one whose class cannot be
    rebuilt from its args (scipy's ArpackNoConvergence needs three; unpickling it raised TypeError in the pool's
    result thread, which died, and the stage waited forever for its result) is raised as a WorkerError naming
    its type, message and traceback instead."""
    try:
        return [_FN(item) for item in chunk]  # type: ignore[misc]
    except Exception as e:
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:
            raise WorkerError(f"{type(e).__module__}.{type(e).__name__} in a worker: {e}\n"
                              + "".join(traceback.format_exception(e))) from None
        raise


def map_images(fn: Callable[[T], R], items: Iterable[T], workers: int, chunk: int = 4) -> Iterator[R]:
    """fn(item) for every item, yielded in the order of `items`, whatever `workers` and `chunk` are.

    workers: 0 = every core, 1 = in this process (no pool; `fn` need not pickle), n = a pool of n processes fed
    `chunk` items per task with at most 2 * n tasks in flight (results of early items are yielded while later ones
    run). An exception raised by `fn` is raised here, in the caller. Stopping the iteration early (break, an error
    in the caller) terminates the pool.
    """
    if chunk < 1:
        raise ValueError(f"chunk is {chunk}; it must be >= 1")
    n, it = resolve_workers(workers), iter(items)
    if n == 1:
        yield from map(fn, it)
        return
    with _context().Pool(n, initializer=_install, initargs=(fn,)) as pool:
        pending: deque = deque()
        for batch in iter(lambda: list(islice(it, chunk)), []):
            pending.append(pool.apply_async(_run_chunk, (batch,)))
            if len(pending) >= 2 * n:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
