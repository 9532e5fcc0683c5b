"""Worker processes for the per-image work of :mod:`gtsrb_kit.cook` and :mod:`gtsrb_kit.stats`.

One way to run them: a standard :class:`concurrent.futures.ProcessPoolExecutor` whose workers
come from a forkserver (forking a process that already runs threads, TensorFlow's or OpenCV's,
can deadlock), run OpenCV and BLAS on one thread each (one process per core), and end when their
parent ends, also when it is killed.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# OpenCV reads this when imported (here, in the forkserver and in every worker): no log lines on stderr.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")

_worker_limits: contextlib.ExitStack | None = None


def available_cores() -> int:
    """The CPUs this process may run on (what SLURM or taskset gave it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """OpenCV and BLAS on one thread each: their threads cost more than they save on small arrays."""
    import cv2
    from threadpoolctl import threadpool_limits

    from cv2.utils import logging as cv2_logging

    cv2_logging.setLogLevel(cv2_logging.LOG_LEVEL_SILENT)  # errors reach the user as one line, not as OpenCV's log
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(before)


def _init_worker(parent: int) -> None:
    global _worker_limits
    _worker_limits = contextlib.ExitStack()  # held for the worker's lifetime
    _worker_limits.enter_context(single_threaded())
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this worker when its parent has ended (killed: the pool cannot tell it any more)."""
    while True:
        time.sleep(0.25)
        if _ended(parent):
            os._exit(1)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended, also when it is a zombie not yet reaped by its parent.

    A zombie still answers ``kill(pid, 0)``; and the forkserver, the workers' own parent, lives
    on while they do (they hold its keep-alive pipe), so neither tells a killed caller.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):  # no /proc (not Linux): kill(pid, 0) is all there is
        return False


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Start processes without the caller's ``__main__``: the work lives in gtsrb_kit's modules.

    multiprocessing re-runs the parent's main script in every new process: a user's script without
    an ``if __name__ == "__main__"`` guard would run again in each worker, and a notebook's (after
    ``%reset``) or a script read from stdin cannot be re-run at all.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@contextlib.contextmanager
def process_pool(workers: int, *, preload: str) -> Iterator[cf.Executor | None]:
    """A pool of ``workers`` processes with ``preload`` imported, or None (run here) for ``workers`` <= 1.

    The workers start at once, so they get ready while the caller does its own first work.
    """
    if workers <= 1:
        with single_threaded():
            yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    with _without_main():  # every worker starts here: the pool is full before the first task
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                      initargs=(os.getpid(),))
        for _ in range(workers):
            pool.submit(os.getpid)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ordered(pool: cf.Executor | None, fn: Callable[[Any], Any], items: Iterable[Any], window: int) -> Iterator[tuple[Any, Any]]:
    """``(item, fn(item))`` in order, with at most ``window`` items in flight (bounded memory)."""
    if pool is None:
        for item in items:
            yield item, fn(item)
        return
    pending: collections.deque[tuple[Any, cf.Future]] = collections.deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            done, future = pending.popleft()
            yield done, future.result()
    while pending:
        done, future = pending.popleft()
        yield done, future.result()
