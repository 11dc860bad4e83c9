"""Concurrent /predict requests to one run, answered together.

While one batch runs, the requests that arrive wait; the next batch takes all of them (up to `most`
texts), so 16 clients asking for one text each cost a few batched calls, not 16 calls in turn. Each
request gets its own texts' answers, in order. Each event loop has its own queue and drain (uvicorn runs
one; a test client may run several, one per thread), so a drain only ever touches its own loop's futures.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool


class _Queue:
    """One event loop's waiting requests and the task draining them."""

    def __init__(self):
        self.waiting: deque[tuple[list[str], asyncio.Future]] = deque()
        self.task: asyncio.Task | None = None


class Batcher:
    def __init__(self, predict: Callable[[list[str]], list], most: int = 256):
        self.predict, self.most = predict, most
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # guards the map of loops, shared by the threads that run them

    async def __call__(self, texts: list[str]) -> list:
        loop = asyncio.get_running_loop()
        with self._lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = _Queue()
        future = loop.create_future()
        queue.waiting.append((texts, future))
        if queue.task is None or queue.task.done():
            queue.task = asyncio.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _Queue) -> None:
        waiting = queue.waiting
        while waiting:
            batch, n = [], 0
            while waiting and (not batch or n + len(waiting[0][0]) <= self.most):
                texts, future = waiting.popleft()
                if not future.done():  # a request whose client left is dropped
                    batch.append((texts, future))
                    n += len(texts)
            if not batch:
                continue
            try:
                answers = await run_in_threadpool(self.predict, [t for texts, _ in batch for t in texts])
            except Exception as e:  # every request of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(answers[start : start + len(texts)])
                start += len(texts)
