"""The notifier: when a job with `--notify` URLs has reached a final status, a signed POST
of its outcome to each URL (scheduler/webhooks.py), retried, and its result recorded.

It runs in a thread of its own in the scheduler process, with its own sessions and a
small pool for the POSTs, so a receiver that is slow, dead or failing never delays a
tick, never changes a job, and holds up other notices by no more than the pool's width.

Delivery is at least once, in practice once per URL:
- A scheduler takes up a job's notice by a claim in Redis (a lock with a TTL that its
  holder renews), so two schedulers do not both send it.
- Each URL's outcome (delivered, or given up after `webhook_retry_seconds` of tries with
  pauses doubling from 1 s) is a `notified` event; the transaction of the last URL's
  event also sets the job's `notified_at`. Jobs without `notified_at` are the work.
- A scheduler that dies between a POST and its event leaves the claim to expire: the
  next one sends that URL again (same body, same X-Atelier-Delivery id), skipping the
  URLs whose event is written.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.lock import Lock
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core import redis_keys
from core.errors import one_line
from core.outage import Outage
from core.settings import Settings
from core.storage import Storage, open_storage
from db.engine import UNAVAILABLE, reader_factory, session_factory, where
from db.jobs import add_event
from db.models import FINAL_STATUSES, Event, EventType, Job, Output, utcnow
from scheduler import webhooks
from scheduler.webhooks import Answer

log = logging.getLogger("atelier.notifier")

CLAIM_SECONDS = 60.0
"""A claim lives this long unless renewed: how long a dead scheduler's notices wait."""
RENEW_SECONDS = CLAIM_SECONDS / 4
POLL_SECONDS = 1.0
"""How often the database is asked for jobs to notify."""
FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 300.0
PARALLEL_POSTS = 4
"""POSTs in flight at once: receivers that hang hold up at most this many."""
MAX_NOTICES = 200
"""Notices one scheduler holds at once (more wait in the database)."""
BUG_PAUSE_SECONDS = 30.0
NO_SECRET = "ATELIER_WEBHOOK_SECRET is not set in the scheduler's environment"


@dataclass
class Target:
    """One URL of a notice, and how its tries have gone."""

    url: str
    attempts: int = 0
    due: float = 0.0
    """When (time.monotonic) to try next."""
    deadline: float | None = None
    """Tries stop after this (set at the first)."""
    answer: Answer | None = None
    given_up: bool = False
    recorded: bool = False
    sending: Future[Answer] | None = None

    @property
    def settled(self) -> bool:
        return self.given_up or (self.answer is not None and self.answer.delivered)

    def event(self) -> dict[str, Any]:
        answer = self.answer or Answer(False)
        return {
            "url": self.url,
            "delivered": answer.delivered,
            "attempts": self.attempts,
            "status_code": answer.status_code,
            "error": answer.error,
        }


@dataclass
class Notice:
    job_id: str
    body: bytes
    claim: Lock
    targets: list[Target]
    renewed_at: float = field(default_factory=time.monotonic)


def notice_body(job: Job, outputs: Sequence[Output], store: Storage) -> dict[str, Any]:
    """What a receiver learns: the job's outcome and where its outputs are."""

    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "event": webhooks.EVENT,
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "owner": job.owner,
        "sweep_id": job.sweep_id,
        "status": job.status,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "attempts": job.attempts,
        "created_at": at(job.created_at),
        "started_at": at(job.started_at),
        "finished_at": at(job.finished_at),
        "outputs": [
            {
                "id": o.id,
                "role": o.role,
                "name": o.name,
                "location": store.location(o.key),
                "sha256": o.sha256,
                "bytes": o.bytes,
                "step": o.step,
                "epoch": o.epoch,
            }
            for o in outputs
        ],
    }


def _mark_notified(session: Session, job_id: str) -> None:
    statement = update(Job).where(Job.id == job_id, Job.notified_at.is_(None))
    session.execute(
        statement.values(notified_at=utcnow()).execution_options(synchronize_session=False)
    )


class Notifier:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.sessions = sessions or session_factory(settings.database_url)
        self.readers = reader_factory(settings.database_url)
        self.store = open_storage(settings)
        self.notices: dict[str, Notice] = {}
        self.pool = ThreadPoolExecutor(PARALLEL_POSTS, thread_name_prefix="atelier-notify")
        self._polled_at = 0.0
        self._used_database = self._used_broker = False
        """Whether this round reached the database, Redis: only then may it say they are
        back (the scheduler's loop shares the same outage trackers)."""

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="notifier", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """Notify until `stop`; outages of the database or Redis are waited out."""
        database = Outage.of(f"database at {where(self.settings.database_url)}", log)
        broker = Outage.of("broker", log)
        try:
            while not stop.is_set():
                try:
                    self.step()
                    # Only a round that reached them says they are back.
                    if self._used_database:
                        database.succeeded()
                    if self._used_broker:
                        broker.succeeded()
                except UNAVAILABLE as error:
                    stop.wait(database.failed(error))
                    continue
                except (redis.RedisError, OSError) as error:
                    stop.wait(broker.failed(error))
                    continue
                except Exception:  # a bug: say so, and keep the scheduler's notices going
                    log.exception("notifier round failed")
                    stop.wait(BUG_PAUSE_SECONDS)
                    continue
                self._pause(stop)
        finally:
            self._let_go()

    def step(self) -> None:
        """One round: take in answers, record outcomes, renew claims, take up new
        notices, send what is due."""
        self._used_database = self._used_broker = False
        self._collect()
        for notice in list(self.notices.values()):
            self._record(notice)
        self._renew()
        if time.monotonic() - self._polled_at >= POLL_SECONDS:
            self._polled_at = time.monotonic()
            self._take_up()
        self._send_due()

    def _pause(self, stop: threading.Event) -> None:
        now = time.monotonic()
        sending = [t.sending for n in self.notices.values() for t in n.targets if t.sending]
        waiting = [
            t.due for n in self.notices.values() for t in n.targets
            if not t.settled and t.sending is None
        ]  # fmt: skip
        pause = min([POLL_SECONDS, *(due - now for due in waiting)])
        pause = max(pause, 0.01)
        if sending:  # wake for the first answer, too
            concurrent.futures.wait(sending, timeout=pause, return_when="FIRST_COMPLETED")
        else:
            stop.wait(pause)

    def _take_up(self) -> None:
        if len(self.notices) >= MAX_NOTICES:
            return
        self._used_database = True
        with self.readers() as session:
            ids = session.scalars(
                select(Job.id)
                .where(
                    Job.status.in_(FINAL_STATUSES),
                    Job.notify.is_not(None),
                    Job.notified_at.is_(None),
                    Job.id.not_in(list(self.notices)),
                )
                .order_by(Job.finished_at, Job.id)
                .limit(MAX_NOTICES - len(self.notices))
            ).all()
        for job_id in ids:
            self._used_broker = True
            claim = self.redis.lock(redis_keys.notify_claim(job_id), timeout=CLAIM_SECONDS)
            if not claim.acquire(blocking=False):
                continue  # another scheduler sends it
            notice = self._notice(job_id, claim)
            if notice is None:
                claim.release()
                continue
            self.notices[job_id] = notice

    def _notice(self, job_id: str, claim: Lock) -> Notice | None:
        """The job's notice, for its URLs that have no outcome recorded yet."""
        with self.readers() as session:
            job = session.get(Job, job_id)
            if job is None or job.notified_at is not None or not job.notify:
                return None  # notified meanwhile by the claim's last holder
            outputs = session.scalars(
                select(Output).where(Output.job_id == job_id).order_by(Output.id)
            ).all()
            recorded = session.scalars(
                select(Event.payload).where(
                    Event.job_id == job_id, Event.type == EventType.NOTIFIED
                )
            ).all()
            body = webhooks.encode(notice_body(job, outputs, self.store))
            urls = list(dict.fromkeys(job.notify))
        done = {payload.get("url") for payload in recorded}
        targets = [Target(url) for url in urls if url not in done]
        return Notice(job_id, body, claim, targets)

    def _send_due(self) -> None:
        now = time.monotonic()
        secret = self.settings.webhook_secret
        in_flight = sum(1 for n in self.notices.values() for t in n.targets if t.sending)
        for notice in self.notices.values():
            for target in notice.targets:
                if target.settled or target.sending or target.due > now:
                    continue
                if secret is None:
                    target.answer, target.given_up = Answer(False, error=NO_SECRET), True
                    continue
                if in_flight >= PARALLEL_POSTS:
                    return
                if target.deadline is None:
                    target.deadline = now + self.settings.webhook_retry_seconds
                target.sending = self.pool.submit(
                    webhooks.post,
                    target.url,
                    notice.body,
                    secret,
                    notice.job_id,
                    self.settings.webhook_timeout_seconds,
                )
                in_flight += 1

    def _collect(self) -> None:
        """Answers that came back: delivered, or the next try, or given up."""
        for notice in self.notices.values():
            for target in notice.targets:
                if target.sending is None or not target.sending.done():
                    continue
                try:
                    answer = target.sending.result()
                except Exception as error:  # a bug, not the receiver's: give up, say why
                    answer = Answer(False, error=one_line(error))
                    target.deadline = 0.0
                target.sending, target.answer = None, answer
                target.attempts += 1
                if not answer.delivered:
                    self._schedule_retry(notice, target)

    def _schedule_retry(self, notice: Notice, target: Target) -> None:
        now = time.monotonic()
        pause = min(FIRST_RETRY_SECONDS * 2.0 ** (target.attempts - 1), LONGEST_RETRY_SECONDS)
        if target.deadline is not None and now + pause > target.deadline:
            target.given_up = True
            log.warning(
                "notice of job %s to %s given up after %d tries: %s",
                notice.job_id, target.url, target.attempts, target.answer and target.answer.error,
            )  # fmt: skip
        else:
            target.due = now + pause

    def _record(self, notice: Notice) -> None:
        """An event per settled URL; with the last one, the job's `notified_at`."""
        for target in notice.targets:
            if not target.settled or target.recorded:
                continue
            last = all(t.recorded or t is target for t in notice.targets)
            self._used_database = True
            with self.sessions.begin() as session:
                add_event(session, notice.job_id, EventType.NOTIFIED, target.event())
                if last:
                    _mark_notified(session, notice.job_id)
            target.recorded = True
        if not notice.targets:  # every outcome was recorded before a restart
            with self.sessions.begin() as session:
                _mark_notified(session, notice.job_id)
        if all(t.recorded for t in notice.targets):
            del self.notices[notice.job_id]
            self._release(notice)

    def _renew(self) -> None:
        now = time.monotonic()
        for notice in list(self.notices.values()):
            if now - notice.renewed_at < RENEW_SECONDS:
                continue
            self._used_broker = True
            try:
                notice.claim.reacquire()
            except redis.exceptions.LockNotOwnedError:
                # It expired (this process stalled) and another scheduler has it now.
                log.warning("notice of job %s: claim lost to another scheduler", notice.job_id)
                del self.notices[notice.job_id]
                continue
            notice.renewed_at = now

    def _release(self, notice: Notice) -> None:
        with contextlib.suppress(redis.RedisError):  # expired, or Redis away: it lapses
            notice.claim.release()

    def _let_go(self) -> None:
        """On stopping: hand the claims back so that the next scheduler need not wait
        for them to expire (answers not yet recorded are sent again)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for notice in self.notices.values():
            self._release(notice)
        self.notices.clear()
