"""Dynamic batching: concurrent requests for one predictor merged into one runtime call.

Every request for a (model, format, device) joins its Batcher's queue. The first to find it idle leads:
it waits at most `delay_us` for others to join (0: only those already queued), then runs the queued
rows, up to the model's largest batch, through `Predictor.run` (the one predict path) in one call and
gives each caller exactly its rows back; it keeps doing so while requests keep arriving, then the next
request leads. Requests from the event loop (the OIP routes) and from worker threads (the page and its
predict API) share one queue.

A merged call that fails (one request's inputs overflow float32, say) is run again request by request,
so a bad request in a batch window fails alone. A small batch runs on the event loop's own thread
(a worker-thread hop costs more than a small model's call); a large one in a worker thread, so no
request stalls the others.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import Batch
from pipeline.runtime.predictor import Predictor
from pipeline.serving.naming import MAX_BATCH_SIZE
from pipeline.serving.oip_protocol import max_batch_size


@dataclass(frozen=True)
class Batching:
    """The dynamic batching settings; the server passes its own, with its other limits (demo/server.py)."""

    delay_us: int = 0  # how long a leader waits for others to join; 0: only those already queued
    max_body_bytes: int = 16 * 1024 * 1024  # the body limit that sets each model's largest batch
    max_batch_size: int = MAX_BATCH_SIZE  # the cap on any model's largest batch
    inline_values: int = 16 * 1024  # merged batches of at most this many numbers run on the event loop's thread

    def max_rows(self, entry: ModelEntry) -> int:
        """The largest batch one call may run: the largest one request may bring (oip_protocol.max_batch_size)."""
        return max_batch_size(entry.values_per_example, self.max_body_bytes, self.max_batch_size)

    def triton_config(self) -> dict[str, Any]:
        """These settings as Triton's ModelConfig `dynamic_batching` (JSON form)."""
        return {"max_queue_delay_microseconds": self.delay_us}


Observer = Callable[[int, float, float], None]  # (rows, queue seconds of the oldest, compute seconds) per call


class Job:
    """One request's batch waiting in a queue, and how its answer gets back to it."""

    __slots__ = ("batch", "rows", "queued", "loop", "future")

    def __init__(self, batch: Batch, loop: asyncio.AbstractEventLoop | None) -> None:
        self.batch = batch
        self.rows = len(batch) if isinstance(batch, np.ndarray) else len(next(iter(batch.values())))
        self.queued = time.perf_counter()
        self.loop = loop  # the caller's event loop, or None for a caller in a thread
        self.future: Any = loop.create_future() if loop is not None else concurrent.futures.Future()

    def deliver(self, outputs: Sequence[np.ndarray] | None, error: BaseException | None) -> None:
        """Hand the outputs (or the error) to the caller, on its own loop's thread where it has one."""

        def settle() -> None:
            if self.future.done():  # the caller may have gone (a cancelled request)
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(outputs)

        if self.loop is None:
            settle()
            return

        if _running_loop() is self.loop:
            settle()
        else:
            self.loop.call_soon_threadsafe(settle)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def merge(batches: Sequence[Batch]) -> Batch:
    """Several requests' batches as one, rows in order."""
    if isinstance(batches[0], np.ndarray):
        return np.concatenate(batches)
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


class Batcher:
    """The queue of one predictor's requests, and the leader that runs them merged."""

    def __init__(
        self, predictor: Predictor, max_rows: int, width: int, settings: Batching, observe: Observer | None = None
    ) -> None:
        self.predictor, self.max_rows, self.settings = predictor, max(1, max_rows), settings
        self.width = max(1, width)  # numbers per example
        self.observe = observe
        self._task: asyncio.Task | None = None  # the running leader's (asyncio keeps only weak references)
        self._pending: deque[Job] = deque()
        self._busy = False  # a leader is running the queue
        self._lock = threading.Lock()

    def _join(self, job: Job) -> bool:
        """Queue `job`; True when its caller is to lead."""
        with self._lock:
            self._pending.append(job)
            lead, self._busy = not self._busy, True
        return lead

    def _take(self) -> list[Job]:
        """The queued jobs for one call, up to max_rows (at least one); none: the leader is done."""
        with self._lock:
            if not self._pending:
                self._busy = False
                return []
            jobs = [self._pending.popleft()]
            rows = jobs[0].rows
            while self._pending and rows + self._pending[0].rows <= self.max_rows:
                rows += self._pending[0].rows
                jobs.append(self._pending.popleft())
            return jobs

    def execute(self, jobs: list[Job]) -> None:
        """Run `jobs` as one call and give each its rows; if the call fails, each alone, so one fails alone."""
        start = time.perf_counter()
        if len(jobs) == 1:
            self._alone(jobs[0])
        else:
            try:
                outputs = self.predictor.run(merge([j.batch for j in jobs]))
            except Exception:  # noqa: BLE001 - which request it was is found by running each alone
                for job in jobs:
                    self._alone(job)
            else:
                end = 0
                for job in jobs:
                    begin, end = end, end + job.rows
                    job.deliver([out[begin:end] for out in outputs], None)
        if self.observe is not None:
            self.observe(sum(j.rows for j in jobs), start - jobs[0].queued, time.perf_counter() - start)

    def _alone(self, job: Job) -> None:
        try:
            outputs = self.predictor.run(job.batch)
        except Exception as exc:  # noqa: BLE001 - the caller's to answer
            job.deliver(None, exc)
        else:
            job.deliver(outputs, None)

    def small(self, jobs: list[Job]) -> bool:
        """Whether `jobs` are few enough numbers to run on the event loop's thread."""
        return sum(j.rows for j in jobs) * self.width <= self.settings.inline_values

    def run(self, batch: Batch) -> Sequence[np.ndarray]:
        """`batch`'s outputs, from a worker thread: merged with whatever else is queued."""
        job = Job(batch, None)
        if self._join(job):
            if self.settings.delay_us:
                time.sleep(self.settings.delay_us / 1e6)
            while jobs := self._take():
                self.execute(jobs)
        return job.future.result()

    async def run_async(self, batch: Batch) -> Sequence[np.ndarray]:
        """`batch`'s outputs, from the event loop: merged with whatever else is queued."""
        job = Job(batch, asyncio.get_running_loop())
        if self._join(job):
            # The leading is its own task, so a request that goes away does not strand the queue.
            self._task = asyncio.get_running_loop().create_task(self._lead())
        return await job.future

    async def _lead(self) -> None:
        # Sleeping, even for 0 s, lets the other requests parsed in this turn of the loop join the batch.
        await asyncio.sleep(self.settings.delay_us / 1e6)
        while jobs := self._take():
            if self.small(jobs):
                self.execute(jobs)
                await asyncio.sleep(0)  # the others on the loop go between two batches
            else:
                await run_in_threadpool(self.execute, jobs)
