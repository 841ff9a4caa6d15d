"""A driver's scans run on daemon threads, kept for the next scan once done.

A read of sysfs can block for good (a device that stopped answering its config
space, a FIFO where a file should be). On a worker thread of the pool the process
shares (the agent's built-in drivers share one), such a scan would keep the process
from ever exiting: the pool's threads are not daemons. On a daemon thread it holds
only itself and one of the 40 tokens of the limiter that bounds them: its driver's
discovery stays running (every later one joins it), the agent reports that driver
failed, the others scan on, and the process still stops when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio.to_thread

Params = ParamSpec("Params")
Result = TypeVar("Result")


async def run_in_daemon_thread(
    work: Callable[Params, Result], *args: Params.args, **kwargs: Params.kwargs
) -> Result:
    """``work(*args, **kwargs)`` on a scan thread (a daemon); its result, or its error."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Result] = loop.create_future()

    def settle(result: Result | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(*args, **kwargs), None
        except BaseException as exc:  # handed to the awaiting task, as a pool would
            result, error = None, exc
        # RuntimeError: the loop closed while this ran, and nobody waits.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    # As many at once as the process's worker threads (anyio's limiter, which the
    # simulator sets for its thousands of nodes); a hung scan keeps its token.
    async with anyio.to_thread.current_default_thread_limiter():
        _submit(run)
        return await done


_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_lock = threading.Lock()
_idle = 0  # threads waiting for a job, not yet promised one


def _submit(job: Callable[[], None]) -> None:
    """Runs ``job`` on an idle scan thread, or on a new one if none is idle: a thread
    per job in flight, never more (starting a thread per scan was a share of the
    simulator's CPU worth keeping: docs/benchmarks.md, "Figures behind the code")."""
    global _idle
    with _lock:
        idle = _idle > 0
        if idle:
            _idle -= 1
    if not idle:
        threading.Thread(target=_work, name="scan", daemon=True).start()
    _jobs.put(job)


def _work() -> None:
    global _idle
    while True:
        _jobs.get()()  # the job reports its own errors
        with _lock:
            _idle += 1
