"""The delivery loop: works off the notification outbox (``notification_deliveries``).

A pass expires deliveries older than ``CONVEYOR_NOTIFY_MAX_AGE``, then takes the due ones
(pending, ``next_attempt_at`` passed, not claimed) channel by channel. Each row is claimed
with a conditional UPDATE before it is sent — two processes never send the same row at once,
so the loop needs no leader lock — and the claim lasts long enough for one send. A success
marks it delivered; a failure counts an attempt and sets the next one with capped,
jittered exponential backoff (the channel's other rows wait for the next pass: a receiver
that is down is asked once per pass, not once per event).

A process killed mid-send leaves its claim to expire; the row is sent again then. Nothing is
lost, and the receiver may see an event twice only with the same body ``id`` (the
idempotency key), so it can drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from conveyor.db.base import utcnow
from conveyor.db.models import NotificationChannel, NotificationDelivery, NotificationEvent
from conveyor.db.session import session_scope
from conveyor.secrets import SecretBox
from conveyor.services import channels, notify, notify_senders
from conveyor.settings import Settings

log = logging.getLogger("conveyor.notify")

BACKOFF_FIRST = 10.0  # seconds before the first retry
BACKOFF_MAX = 600.0  # a receiver back up gets its events within ten minutes
BATCH = 200
SENDERS = 4  # channels worked at once

Delivery = NotificationDelivery


@dataclass
class PassReport:
    delivered: int = 0
    failed: int = 0
    expired: int = 0

    def add(self, other: PassReport) -> None:
        self.delivered += other.delivered
        self.failed += other.failed
        self.expired += other.expired


def backoff(attempts: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before attempt ``attempts + 1``: doubling from BACKOFF_FIRST, capped at
    BACKOFF_MAX, ±20 % jitter so receivers coming back are not hit all at once."""
    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempts - 1))
    return float(delay * rng(0.8, 1.2))


def claim_seconds(settings: Settings) -> float:
    """How long a claim holds a row: one send (an email is several round trips) and more."""
    return settings.notify_timeout * 4 + 10.0


def one_pass(
    settings: Settings,
    *,
    box: SecretBox | None = None,
    now: datetime | None = None,
    claim_for: float | None = None,
) -> PassReport:
    """Expire what is too old, then send what is due; what happened."""
    box = box or SecretBox(settings.secret_keys())
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
    report = PassReport(expired=_expire(settings, clock()))
    by_channel: dict[int, list[int]] = {}
    for delivery_id, channel_id in _due(settings, clock()):
        by_channel.setdefault(channel_id, []).append(delivery_id)
    if not by_channel:
        return report
    hold = timedelta(seconds=claim_for if claim_for is not None else claim_seconds(settings))

    def work(ids: list[int]) -> PassReport:
        return _work_channel(settings, box, ids, clock, hold)

    with ThreadPoolExecutor(max_workers=min(SENDERS, len(by_channel))) as pool:
        for result in pool.map(work, by_channel.values()):
            report.add(result)
    return report


def _due(settings: Settings, now: datetime) -> list[tuple[int, int]]:
    with session_scope(settings.effective_database_url) as session:
        rows = session.execute(
            select(Delivery.id, Delivery.channel_id)
            .join(NotificationChannel, NotificationChannel.id == Delivery.channel_id)
            .where(
                Delivery.status == "pending",
                or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
                NotificationChannel.is_active.is_(True),
            )
            .order_by(Delivery.id)
            .limit(BATCH)
        )
        return [(int(d), int(c)) for d, c in rows]


def _expire(settings: Settings, now: datetime) -> int:
    cutoff = now - timedelta(seconds=settings.notify_max_age)
    with session_scope(settings.effective_database_url) as session:
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.status == "pending",
                Delivery.created_at < cutoff,
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            )
            .values(status="expired", claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        expired = int(getattr(result, "rowcount", 0) or 0)
    if expired:
        log.warning(
            "%d notification(s) expired undelivered (older than CONVEYOR_NOTIFY_MAX_AGE)", expired
        )
    return expired


def _work_channel(
    settings: Settings,
    box: SecretBox,
    ids: list[int],
    clock: Callable[[], datetime],
    hold: timedelta,
) -> PassReport:
    report = PassReport()
    for delivery_id in ids:
        now = clock()
        until = now + hold
        claimed = _claim(settings, box, delivery_id, now, until)
        if claimed is None:
            continue  # another process has it, or it is no longer due
        type_name, config, body = claimed
        try:
            notify_senders.send(type_name, config, body, settings=settings)
        except notify_senders.SendFailed as exc:
            _failed(settings, delivery_id, until, clock(), exc.message)
            report.failed += 1
            break  # the receiver is down or refusing: its other rows wait for the next pass
        except Exception as exc:  # a bug: keep the row, say so, go on with other channels
            log.exception("notification %s: sending failed", delivery_id)
            _failed(settings, delivery_id, until, clock(), f"internal error: {type(exc).__name__}")
            report.failed += 1
            break
        _delivered(settings, delivery_id, clock())
        report.delivered += 1
    return report


def _claim(
    settings: Settings, box: SecretBox, delivery_id: int, now: datetime, until: datetime
) -> tuple[str, dict[str, object], dict[str, object]] | None:
    """Take the row for one send (a conditional UPDATE: one taker wins); what to send."""
    with session_scope(settings.effective_database_url) as session:
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.status == "pending",
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            )
            .values(claimed_until=until)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        row = session.get(Delivery, delivery_id)
        assert row is not None
        event = session.get(NotificationEvent, row.event_id)
        channel = session.get(NotificationChannel, row.channel_id)
        if event is None or channel is None:
            return None
        return channel.type, channels.decrypted(channel, box), notify.body(event)


def _failed(
    settings: Settings, delivery_id: int, until: datetime, now: datetime, error: str
) -> None:
    with session_scope(settings.effective_database_url) as session:
        row = session.get(Delivery, delivery_id)
        # Still ours? (A claim that ran out may have been taken, and the row delivered.)
        if row is None or row.status != "pending" or row.claimed_until != until:
            return
        attempts = row.attempts = (row.attempts or 0) + 1
        row.next_attempt_at = now + timedelta(seconds=backoff(attempts))
        row.claimed_until = None
        row.last_error = error
        channel = session.get(NotificationChannel, row.channel_id)
        if channel is not None:
            channel.last_error = error
            channel.last_error_at = now
    log.warning("notification %s not delivered (attempt %d): %s", delivery_id, attempts, error)


def _delivered(settings: Settings, delivery_id: int, now: datetime) -> None:
    with session_scope(settings.effective_database_url) as session:
        row = session.get(Delivery, delivery_id)
        if row is None or row.status != "pending":
            return
        row.status = "delivered"
        row.delivered_at = now
        row.claimed_until = None
        channel = session.get(NotificationChannel, row.channel_id)
        if channel is not None and (
            channel.last_delivery_at is None or channel.last_delivery_at < now
        ):
            channel.last_delivery_at = now


async def run_forever(settings: Settings, *, stop: asyncio.Event) -> None:
    """A pass every ``CONVEYOR_NOTIFY_INTERVAL`` seconds until ``stop`` is set (at once
    again while whole batches are due). Any number of processes may run it (claims)."""
    box = SecretBox(settings.secret_keys())
    while not stop.is_set():
        wait = settings.notify_interval
        try:
            report = await asyncio.to_thread(one_pass, settings, box=box)
            if report.delivered or report.failed:
                log.info(
                    "notifications: %d delivered, %d failed attempt(s)",
                    report.delivered,
                    report.failed,
                )
            if report.delivered >= BATCH:
                wait = 0.1
        except Exception:  # the database is unreachable, or a bug: try again later
            log.exception("notification pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)


# --- figures for /metrics -------------------------------------------------------------


@dataclass(frozen=True)
class ChannelFigures:
    name: str
    type: str
    pending: int
    delivered: int
    expired: int
    failed_attempts: int  # every attempt that did not arrive, delivered rows included
    last_delivery_at: datetime | None


def figures(settings: Settings) -> list[ChannelFigures]:
    """Per channel: the outbox by status, failed attempts, the last delivery."""
    from sqlalchemy import func

    with session_scope(settings.effective_database_url) as session:
        counts: dict[int, dict[str, int]] = {}
        attempts: dict[int, int] = {}
        rows = session.execute(
            select(
                Delivery.channel_id, Delivery.status, func.count(), func.sum(Delivery.attempts)
            ).group_by(Delivery.channel_id, Delivery.status)
        )
        for channel_id, status, n, tried in rows:
            counts.setdefault(channel_id, {})[status] = int(n)
            attempts[channel_id] = attempts.get(channel_id, 0) + int(tried or 0)
        return [
            ChannelFigures(
                name=c.name,
                type=c.type,
                pending=counts.get(c.id, {}).get("pending", 0),
                delivered=counts.get(c.id, {}).get("delivered", 0),
                expired=counts.get(c.id, {}).get("expired", 0),
                failed_attempts=attempts.get(c.id, 0),
                last_delivery_at=c.last_delivery_at,
            )
            for c in session.scalars(select(NotificationChannel).order_by(NotificationChannel.id))
        ]
