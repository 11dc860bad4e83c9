"""Concurrent /predict requests to one run, answered together.

While one batch runs, the requests that arrive wait; the next batch takes all of them (up to `most`
texts), so 16 clients asking for one text each cost a few batched calls, not 16 calls in turn. Each
request gets its own texts' answers, in order. Runs on the server's event loop: no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool


class Batcher:
    def __init__(self, predict: Callable[[list[str]], list], most: int = 256):
        self.predict, self.most = predict, most
        self.waiting: deque[tuple[list[str], asyncio.Future]] = deque()
        self.task: asyncio.Task | None = None

    async def __call__(self, texts: list[str]) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((texts, future))
        # a drain left on another loop (one that ended with the application's test client) drains nothing here
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            batch, n = [], 0
            while self.waiting and (not batch or n + len(self.waiting[0][0]) <= self.most):
                texts, future = self.waiting.popleft()
                # a request whose client left, or from a loop that has ended, is dropped
                if not future.done() and future.get_loop() is loop:
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
