"""Noticing that the broker restarted, and re-sending the jobs whose messages it may have lost.

A Redis without persistence comes back from a restart empty: every queued message (a job's
ingest task, the batches it fanned out) is gone, while the catalog still has the job queued or
running. The stale-job takeover (``stale_after_s``, 120 s) would find it only once it had shown
no progress that long. Instead each worker asks the broker who it is every
:data:`CHECK_EVERY_S` (Redis's ``run_id``, new at every start of the server) and, when it
changes, re-sends a resume for every unfinished job at once. Re-running a job is safe: its tasks
check the catalog and skip what is done.

Several workers notice the same restart: a job is claimed (its heartbeat moved to now, in the
statement that checks it) only while its heartbeat is older than the restart, so one of them
re-sends it. Other brokers (the embedded SQL one, AMQP) are not watched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


log = logging.getLogger(__name__)

#: How often a worker asks the broker who it is (seconds): a restart is noticed within this.
CHECK_EVERY_S = 2.0


def broker_identity(url: str) -> tuple[str, float] | None:
    """``(run_id, uptime in seconds)`` of the Redis at ``url``; None when the broker is not Redis
    or does not answer now."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            info = client.info("server")
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return None
    run_id = info.get("run_id")
    if not run_id:
        return None
    return str(run_id), float(info.get("uptime_in_seconds", 0) or 0)


def resend_after_restart(app: Celery, restarted_at: datetime) -> list[int]:
    """Re-send a resume for each unfinished job whose heartbeat is older than the broker's
    restart (claimed one by one: of several workers, one re-sends it). Returns the job ids."""
    import sqlalchemy as sa

    from .catalog import Job
    from .celery_app import TASK_RESUME
    from .jobs import unfinished_job_ids

    ctx = app.clipsearch
    now = datetime.now(UTC)
    taken: list[int] = []
    with ctx.session() as session:
        for job_id in unfinished_job_ids(session):
            claimed = session.execute(
                sa.update(Job)
                .where(
                    Job.id == job_id,
                    Job.state.in_(("queued", "running")),
                    sa.func.coalesce(Job.heartbeat_at, Job.updated_at) < restarted_at,
                )
                .values(heartbeat_at=now)
            )
            session.commit()
            if getattr(claimed, "rowcount", 0):
                taken.append(job_id)
    for job_id in taken:
        app.send_task(TASK_RESUME, args=[job_id])
    if taken:
        log.warning(
            "the broker restarted (its queue may be lost): re-sent unfinished jobs %s", taken
        )
    return taken


class BrokerRestartWatch:
    """A daemon thread that re-sends unfinished jobs when the broker's identity changes."""

    def __init__(
        self,
        app: Celery,
        every_s: float = CHECK_EVERY_S,
        identify: Callable[[str], tuple[str, float] | None] = broker_identity,
    ) -> None:
        self.app = app
        self.url = str(app.conf.broker_url or "")
        self.every_s = every_s
        self.identify = identify
        self._seen: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="clipsearch-broker-watch", daemon=True
        )

    def check(self) -> list[int]:
        """One look: the jobs re-sent when the broker is a new one since the last look."""
        found = self.identify(self.url)
        if found is None:  # down, or not a broker we can tell apart: keep the last identity
            return []
        run_id, uptime = found
        seen, self._seen = self._seen, run_id
        if seen is None or seen == run_id:
            return []
        # a job whose heartbeat is older than the restart (plus a second for the clocks) may
        # have lost its messages with it
        restarted_at = datetime.now(UTC) - timedelta(seconds=max(0.0, uptime - 1.0))
        return resend_after_restart(self.app, restarted_at)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except Exception as exc:  # the catalog is down: try again next round
                log.warning("could not re-send the jobs after a broker restart: %s", exc)

    def start(self) -> None:
        if not self.url.startswith(("redis://", "rediss://")):
            return
        self._seen = (self.identify(self.url) or (None, 0.0))[0]
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
