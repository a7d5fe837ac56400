"""The server's threads for blocking calls (the model's predict() above all).

One pool per backend, THREADS threads, started on demand and stopped at the app's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelbridge.service import Backend

__all__ = ["ThreadPool", "close_pool", "pool_for"]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ThreadPool:
    """At most `size` threads for the blocking calls (the model's predict() above all).

    Why not anyio.to_thread.run_sync: per call it enters a cancel scope, acquires a
    CapacityLimiter and finds its pool through a RunVar, 40-80 us of the event loop's time on
    a busy core: more than a bare uvicorn app spends on a whole request (bench/NOTES.md). Here
    a call is a SimpleQueue.put and one call_soon_threadsafe back; contextvars are copied as
    anyio does. Threads start on demand, as in concurrent.futures.ThreadPoolExecutor, and stop
    at close() (the app's shutdown).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by each thread that finished a call
        self._lock = threading.Lock()
        self._count = 0
        self._closed = False

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("the thread pool is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((contextvars.copy_context(), func, args, loop, future))
        if not self._idle.acquire(blocking=False):
            self._grow()
        return await future

    def _grow(self) -> None:
        with self._lock:
            if self._count >= self.size or self._closed:
                return
            self._count += 1
        threading.Thread(target=self._work, name="labelbridge-call", daemon=True).start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            context, func, args, loop, future = item
            del item
            error: BaseException | None = None
            result: Any = None
            try:
                result = context.run(func, *args)
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, future, result, error)
            del context, func, args, loop, future, result, error
            self._idle.release()

    def close(self) -> None:
        """Stop the threads once the calls already queued are done."""
        with self._lock:
            self._closed = True
            count, self._count = self._count, 0
        for _ in range(count):
            self._queue.put(None)


_POOLS: weakref.WeakKeyDictionary[Backend, ThreadPool] = weakref.WeakKeyDictionary()


def pool_for(backend: Backend) -> ThreadPool:
    """The backend's threads (THREADS of them), shared by its routes and the direct path."""
    pool = _POOLS.get(backend)
    if pool is None:
        pool = _POOLS.setdefault(backend, ThreadPool(backend.settings.threads))
    return pool


def close_pool(backend: Backend) -> None:
    pool = _POOLS.pop(backend, None)
    if pool is not None:
        pool.close()
