"""The delivery loop against a real webhook receiver that checks every signature: a receiver
down then up gets every event once, a sender killed mid-delivery loses nothing, two senders
at once never send an event twice, old deliveries expire; /metrics shows the outbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from conveyor.db.base import utcnow
from conveyor.db.models import NotificationChannel, NotificationDelivery
from conveyor.db.session import session_scope
from conveyor.domain.notifications import ChannelCreate
from conveyor.secrets import SecretBox
from conveyor.services import channels, notify, notify_delivery
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.net import wait_for
from tests.fixtures.notify import WebhookReceiver


def _channel(settings: Settings, receiver: WebhookReceiver, name: str = "hook") -> int:
    with session_scope(settings.effective_database_url) as s:
        data = ChannelCreate(
            name=name,
            type="webhook",
            config={"url": receiver.url, "secret": receiver.secret},
        )
        box = SecretBox(settings.secret_keys())
        return channels.create(data, session=s, actor=SYSTEM, box=box, settings=settings).id


def _emit(settings: Settings, n: int, prefix: str = "run.failed:run-") -> list[str]:
    keys = [f"{prefix}{i}" for i in range(1, n + 1)]
    with session_scope(settings.effective_database_url) as s:
        for key in keys:
            notify.emit(s, "run.failed", key=key, connector=None, details={"note": key})
    return keys


def _rows(settings: Settings) -> list[NotificationDelivery]:
    with session_scope(settings.effective_database_url) as s:
        rows = list(s.scalars(select(NotificationDelivery).order_by(NotificationDelivery.id)))
        s.expunge_all()
        return rows


def _channel_row(settings: Settings, cid: int) -> NotificationChannel:
    with session_scope(settings.effective_database_url) as s:
        row = s.get(NotificationChannel, cid)
        assert row is not None
        s.expunge(row)
        return row


def test_a_receiver_down_then_up_gets_every_event_once(
    settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.stop()  # the port is closed: connection refused
    cid = _channel(settings, webhook_receiver)
    keys = _emit(settings, 3)
    t0 = utcnow()

    first = notify_delivery.one_pass(settings, now=t0)
    # One attempt per channel per pass while it fails: the others wait, untouched.
    assert (first.delivered, first.failed) == (0, 1)
    rows = _rows(settings)
    assert [r.attempts for r in rows] == [1, 0, 0]
    assert rows[0].next_attempt_at is not None
    assert 8 <= (rows[0].next_attempt_at - t0).total_seconds() <= 12  # 10 s ± 20 %
    channel = _channel_row(settings, cid)
    assert channel.last_error is not None and "refused" in channel.last_error.lower()
    assert webhook_receiver.secret not in channel.last_error

    # Down for an hour: attempts go on with growing, capped backoff; nothing is lost.
    for minutes in range(1, 60, 7):
        notify_delivery.one_pass(settings, now=t0 + timedelta(minutes=minutes))
    rows = _rows(settings)
    assert all(r.status == "pending" for r in rows) and rows[0].attempts >= 3
    gaps = [(r.next_attempt_at - t0).total_seconds() for r in rows if r.next_attempt_at]
    assert max(gaps) <= 3600 + notify_delivery.BACKOFF_MAX * 1.2

    webhook_receiver.start()  # back, on the same port
    back = notify_delivery.one_pass(settings, now=t0 + timedelta(hours=1, minutes=15))
    assert back.delivered == 3
    assert notify_delivery.one_pass(settings, now=t0 + timedelta(hours=2)).delivered == 0
    assert sorted(webhook_receiver.ids()) == sorted(keys)  # each once, signature checked
    assert webhook_receiver.bad_signatures == []
    got = webhook_receiver.received[0]
    assert got.headers["X-Conveyor-Event"] == "run.failed"
    assert got.headers["X-Conveyor-Delivery"] == got.body["id"]
    assert set(got.body) >= {"id", "event", "occurred_at", "note"}
    assert all(r.status == "delivered" and r.delivered_at for r in _rows(settings))
    out = channels.to_out(_channel_row(settings, cid), {"delivered": 3})
    assert out.last_delivery_at is not None


_CHILD = """
import sys
from conveyor.services import notify_delivery
from conveyor.settings import Settings
notify_delivery.one_pass(Settings())
sys.exit(3)  # never reached: the test kills this process while the receiver holds it
"""


def test_a_sender_killed_mid_delivery_loses_nothing(
    settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    _channel(settings, webhook_receiver)
    keys = _emit(settings, 2)
    webhook_receiver.hold = threading.Event()
    assert settings.secret_key is not None
    env = {
        **os.environ,
        "CONVEYOR_HOME": str(settings.home),
        "CONVEYOR_DATABASE_URL": settings.effective_database_url,
        "CONVEYOR_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env)
    try:
        wait_for(webhook_receiver.arrived.is_set, 60, "the first delivery to arrive", every=0.05)
        child.send_signal(signal.SIGKILL)  # mid-send: the receiver has not answered yet
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        webhook_receiver.hold.set()
    webhook_receiver.hold = None
    assert webhook_receiver.ids() == [keys[0]]

    # The dead process's claim still holds the row: nobody sends it twice at once.
    now = utcnow()
    notify_delivery.one_pass(settings, now=now)
    claimed = _rows(settings)[0]
    assert claimed.status == "pending" and claimed.claimed_until is not None
    assert webhook_receiver.ids().count(keys[0]) == 1

    # Once the claim has run out the row is sent again: nothing lost, the repeat has the
    # same id (receivers drop it), and every row ends delivered.
    later = now + timedelta(seconds=notify_delivery.claim_seconds(settings) + 1)
    notify_delivery.one_pass(settings, now=later)
    assert set(webhook_receiver.ids()) == set(keys)
    assert webhook_receiver.ids().count(keys[0]) == 2 and webhook_receiver.ids().count(keys[1]) == 1
    assert all(r.status == "delivered" for r in _rows(settings))
    assert webhook_receiver.bad_signatures == []


def test_two_senders_at_once_send_every_event_exactly_once(
    settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    _channel(settings, webhook_receiver, "a")
    _channel(settings, webhook_receiver, "b")
    keys = _emit(settings, 8)
    box = SecretBox(settings.secret_keys())
    barrier = threading.Barrier(3)
    reports: list[Any] = []

    def sender() -> None:
        barrier.wait()
        reports.append(notify_delivery.one_pass(settings, box=box))

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.delivered for r in reports) == 16  # 8 events x 2 channels
    ids = webhook_receiver.ids()
    assert len(ids) == 16 and sorted(set(ids)) == sorted(keys)
    assert all(ids.count(k) == 2 for k in keys)  # once per channel, never twice


def test_too_old_deliveries_expire_and_metrics_show_the_outbox(
    settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    _channel(settings, webhook_receiver, "ops")
    _emit(settings, 2)
    with TestClient(create_app(settings)) as client:
        m = _samples(client.get("/metrics").text)
        labels = (("channel", "ops"), ("type", "webhook"))
        assert m[("conveyor_notification_pending", labels)] == 2
        assert m[("conveyor_notification_delivered_total", labels)] == 0

        notify_delivery.one_pass(settings)
        _emit(settings, 1, prefix="sync.error:c-")
        far = utcnow() + timedelta(seconds=settings.notify_max_age + 60)
        report = notify_delivery.one_pass(settings, now=far)
        assert (report.expired, report.delivered) == (1, 0)
        m = _samples(client.get("/metrics").text)
    assert m[("conveyor_notification_pending", labels)] == 0
    assert m[("conveyor_notification_delivered_total", labels)] == 2
    assert m[("conveyor_notification_expired_total", labels)] == 1
    assert m[("conveyor_notification_last_delivery_timestamp_seconds", labels)] > 0
    assert len(webhook_receiver.ids()) == 2


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
