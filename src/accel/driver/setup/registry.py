"""The driver's setup operations: which ran, which run, and where each one stands.

Each operation is named by its caller (the conductor) with a uuid, so asking again
with the same uuid and the same request is answered with the operation's progress
instead of running it twice; a different request under a known uuid is a conflict.
At most one unfinished operation runs per PCI address (a second one is a conflict,
409), because two actions on one device would undo each other half way.

Operations run as asyncio tasks. When one that may have changed the hardware ends
(done or failed), the registry calls ``after_change`` (the driver rediscovers) before
the operation reads as final, so a caller that sees DONE and then reads the driver's
hardware sees the change. The registry keeps the last ``capacity`` operations;
older finished ones are forgotten (an unfinished one never is).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from uuid import UUID

from accel.driver.setup.common import Plan, Progress, SetupFailed
from accel.errors import Conflict, NotFound
from accel.internal.setup_schemas import SetupCall, SetupProgress
from accel.states import OPERATION_FINAL, OperationState

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1000


@dataclass
class Operation:
    call: SetupCall
    state: OperationState = OperationState.PENDING
    progress: Progress = field(default_factory=Progress)
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in OPERATION_FINAL

    def view(self) -> SetupProgress:
        return SetupProgress(
            operation=self.call.operation,
            state=self.state,
            steps=list(self.progress.steps),
            error=self.error,
            reboot_required=self.progress.reboot_required,
        )


class OperationRegistry:
    def __init__(
        self,
        after_change: Callable[[], Awaitable[None]],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._after_change = after_change
        self._capacity = capacity
        # Not an LRU map: beyond capacity the oldest *finished* operations are
        # forgotten, and a running one never is (its caller polls it to the end).
        # A dict keeps its insertion order, which is the age order here.
        self._operations: dict[UUID, Operation] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._operations)

    def progress(self, operation: UUID) -> SetupProgress:
        found = self._operations.get(operation)
        if found is None:
            raise NotFound(f"no setup operation {operation} on this driver")
        return found.view()

    def known(self, call: SetupCall) -> SetupProgress | None:
        """The progress of ``call`` if it was asked before; Conflict if asked differently."""
        found = self._operations.get(call.operation)
        if found is None:
            return None
        if found.call != call:
            raise Conflict(f"operation {call.operation} was asked before with a different request")
        return found.view()

    def check_free(self, address: str) -> None:
        """Conflict if an unfinished operation is working on ``address``."""
        for operation in self._operations.values():
            if operation.call.address == address and not operation.finished:
                raise Conflict(
                    f"operation {operation.call.operation} is still {operation.state} "
                    f"on {address}; ask again when it has finished"
                )

    def start(self, call: SetupCall, plan: Plan) -> SetupProgress:
        """Registers ``call`` and runs ``plan`` in the background (a dry run: at once)."""
        # Checked again: another request may have started while this one was planned.
        known = self.known(call)
        if known is not None:
            return known
        operation = Operation(call)
        if call.dry_run:
            # Nothing to run: the plan's steps are the answer, and nothing is held.
            operation.progress.steps.extend(plan.steps)
            operation.state = OperationState.DONE
        else:
            self.check_free(call.address)
            task = asyncio.create_task(self._run(operation, plan), name=f"setup {call.operation}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._operations[call.operation] = operation
        self._forget_old()
        return operation.view()

    async def _run(self, operation: Operation, plan: Plan) -> None:
        call = operation.call
        operation.state = OperationState.RUNNING
        log.info("setup %s: %s on %s", call.operation, call.setup.action, call.address)
        error = None
        try:
            await plan.run(operation.progress)
        except SetupFailed as exc:
            error = exc.message
        except Exception as exc:  # a bug must fail the operation, not leave it RUNNING
            log.exception("setup %s failed unexpectedly", call.operation)
            error = f"internal error: {type(exc).__name__}: {exc}"
        if plan.changes or error is not None:
            # A failure half way may have changed something too: look again either way.
            try:
                await self._after_change()
            except Exception:
                log.exception("rediscovery after setup %s failed", call.operation)
        operation.error = error
        operation.state = OperationState.FAILED if error is not None else OperationState.DONE
        if error is None:
            log.info("setup %s done", call.operation)
        else:
            log.warning("setup %s failed: %s", call.operation, error)

    def _forget_old(self) -> None:
        excess = len(self._operations) - self._capacity
        if excess <= 0:
            return
        for uuid in [u for u, op in self._operations.items() if op.finished][:excess]:
            del self._operations[uuid]

    async def close(self) -> None:
        """Stops what still runs (the driver is stopping); a tool in flight is killed."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
