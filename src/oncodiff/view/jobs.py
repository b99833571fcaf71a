"""Background predictions, one at a time: two what-ifs asked together are queued, never interleaved.

A job is a list of prediction requests and a function that builds its answer once they are all predicted.
Requests already in the cache cost nothing, so a job whose requests are all cached finishes at once. At most
:data:`MAX_PENDING` jobs wait or run at once; one more is refused (:class:`QueueFull`, HTTP 429), so a flood of
questions cannot queue work without end. After each job the cache is trimmed to its limit
(:meth:`~oncodiff.view.whatif.PredictionStore.evict`).
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oncodiff.errors import OncodiffError
from oncodiff.view.whatif import PredictionRequest, PredictionStore

MAX_PENDING = 8  # jobs queued or running; each is up to 7 predictions
KEPT_JOBS = 256  # finished jobs whose answers the page may still poll


class QueueFull(OncodiffError):
    """The queue holds :data:`MAX_PENDING` jobs already."""


@dataclass
class Job:
    """State the page polls: status queued | running | done | error, progress ``done``/``total`` predictions."""

    id: str
    requests: list[PredictionRequest]
    finish: Callable[[], dict]
    status: str = "queued"
    done: int = 0
    total: int = 0
    message: str = "waiting for the predictions asked before this one"
    result: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "done": self.done, "total": self.total,
                "message": self.message, "result": self.result}


class JobQueue:
    """One worker thread runs the jobs in the order they were submitted."""

    def __init__(self, store: PredictionStore, limit: int = MAX_PENDING):
        self.store = store
        self.limit = limit
        self.pending = 0  # jobs queued or running
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()  # jobs' fields are written by the worker and read by request threads
        self._worker = threading.Thread(target=self._work, name="oncodiff-view-predictions", daemon=True)
        self._worker.start()

    def submit(self, requests: Sequence[PredictionRequest], finish: Callable[[], dict]) -> Job:
        """Queue a job; one whose predictions are all cached is answered before this returns. Raises
        :class:`QueueFull` when :attr:`limit` jobs are waiting or running already."""
        unique = list(dict.fromkeys(requests))
        missing = [r for r in unique if self.store.find(r) is None]
        with self._lock:
            if missing and self.pending >= self.limit:
                raise QueueFull(f"the viewer is busy: {self.pending} prediction jobs are waiting or running, the "
                                f"most it queues; wait until one finishes (the page shows their progress), then ask "
                                "again")
            job = Job(str(next(self._ids)), unique, finish, total=len(missing))
            self.jobs[job.id] = job
            finished = [k for k, j in self.jobs.items() if j.status in ("done", "error")]
            for old in finished[:max(0, len(self.jobs) - KEPT_JOBS)]:
                del self.jobs[old]
            self.pending += bool(missing)
        if not missing:
            self._finish(job)
        else:
            self._queue.put(job)
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self.jobs.get(job_id)
            return None if job is None else job.to_dict()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(job)
            finally:
                with self._lock:
                    self.pending -= 1
                self._trim()
                self._queue.task_done()

    def _run(self, job: Job) -> None:
        for request in job.requests:
            if self.store.find(request) is not None:  # cached before, or predicted by an earlier job meanwhile
                continue
            self._update(job, status="running", message=f"predicting {_describe(request)} "
                                                        f"({job.done + 1} of {job.total})")
            try:
                self.store.predict(request)
            except OncodiffError as e:
                return self._update(job, status="error", message=str(e))
            except Exception as e:  # noqa: BLE001 - the page must hear about any failure, not hang
                traceback.print_exc()
                return self._update(job, status="error", message=f"the prediction failed: {type(e).__name__}: {e}")
            self._update(job, done=job.done + 1, total=max(job.total, job.done + 1))  # total grows if one was evicted
        self._finish(job)

    def _trim(self) -> None:
        try:
            self.store.evict()
        except OSError as e:  # a cache that cannot be trimmed now is trimmed after the next job
            print(f"warning: cannot trim the viewer's cache {self.store.folder}: {e}", flush=True)

    def _finish(self, job: Job) -> None:
        try:
            result = job.finish()
        except OncodiffError as e:
            return self._update(job, status="error", message=str(e))
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            return self._update(job, status="error", message=f"{type(e).__name__}: {e}")
        self._update(job, status="done", result=result, message="done")

    def _update(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)


def _describe(request: PredictionRequest) -> str:
    when = "at each follow-up" if request.days is None else f"at day {request.days:g}"
    given = f" with {', '.join(request.overrides)}" if request.overrides else ""
    return f"{request.patient} {when}{given}"
