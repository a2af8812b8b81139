"""The queue in front of an in-process engine (transformers, offline vLLM).

Callers `await complete(request)` one by one; a worker task takes whatever has arrived,
as the subclass's `_gather` decides, and answers it with one `_run_batch` call in a
thread, so the event loop stays free while the engine works.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from evol.backends.base import BackendError, Reply, Request


@dataclass
class Job:
    request: Request
    future: asyncio.Future = field(repr=False)


class BatchingBackend:
    """`complete`, the worker and `aclose`; subclasses give `_gather` and `_run_batch`."""

    worker_name = "local-backend-worker"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None

    async def complete(self, request: Request) -> Reply:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()  # one worker per event loop (tests run several)
            self._worker = asyncio.create_task(self._drain(), name=self.worker_name)
        future = loop.create_future()
        self._queue.put_nowait(Job(request, future))
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _gather(self, queue: asyncio.Queue[Job]) -> list[Job]:
        """The next batch: at least one job (waits for it)."""
        raise NotImplementedError

    def _run_batch(self, requests: list[Request]) -> list[Reply | BackendError]:
        """One answer or error per request, in order (runs in a worker thread)."""
        raise NotImplementedError

    async def _drain(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = [j for j in await self._gather(queue) if not j.future.done()]  # callers that gave up
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self._run_batch, [j.request for j in batch])
            except Exception as exc:  # pragma: no cover - engines catch per batch
                results = [BackendError(f"{j.request.tag or 'request'}: {exc!r}") for j in batch]
            for job, res in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(res)

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
