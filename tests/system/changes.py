"""The change loop: connectors changed through the REST API, every change logged.

The log (one JSON line per change: what was asked, what the API answered) is the truth
the end state is checked against. A request the web app never received (connection
refused: it is down) is sent again; one that got no answer (the web app died while it
was in flight) may or may not have landed, so its outcome is marked ``unknown`` and the
expected state accepts both values until a later answered change settles the field.
An answer of 5xx is a bug (but Run now's documented 502 while Prefect is down): counted
and reported, never retried.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SCHEDULES = ("* * * * *", "*/2 * * * *", "*/3 * * * *", "*/5 * * * *")
TIMEZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo")
TAGS = ("soak", "blue", "green", "team.a", "team-b")
CONNECT_RETRY_FOR = 90.0  # seconds a request waits for a web app that is down


class NoAnswer(Exception):
    """The request may have reached the web app, and no answer came back."""


class Unreachable(Exception):
    """The web app refused connections for longer than CONNECT_RETRY_FOR."""


@dataclass
class Api:
    base: str
    token: str
    connect_retries: int = 0
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.base + "/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(60.0, connect=5.0),
        )

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send; resend only while the connection is refused (nothing was received)."""
        deadline = time.monotonic() + CONNECT_RETRY_FOR
        while True:
            try:
                return self.client.request(method, path, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if time.monotonic() > deadline:
                    raise Unreachable(str(exc)) from exc
                self.connect_retries += 1
                time.sleep(0.5)
            except httpx.TransportError as exc:
                raise NoAnswer(f"{type(exc).__name__}: {exc}") from exc


@dataclass
class Expected:
    """What a connector should be, per the log: each field's acceptable values."""

    name: str
    schedule: set[str]
    timezone: set[str]
    is_active: set[bool]
    tags: set[tuple[str, ...]]
    deleted: set[bool] = field(default_factory=lambda: {False})
    created: set[bool] = field(default_factory=lambda: {True})

    def settle(self, key: str, value: Any, answered: bool) -> None:
        values: set[Any] = getattr(self, key)
        if answered:
            values.clear()
        values.add(value)

    @property
    def usable(self) -> bool:
        return self.deleted == {False} and self.created == {True}


@dataclass
class ChangeLoop:
    api: Api
    rng: random.Random
    log_path: Path
    source_ids: list[int]
    destination_id: int
    target: int  # connectors to keep around
    expected: dict[int, Expected] = field(default_factory=dict)
    pending_creates: dict[str, Expected] = field(default_factory=dict)  # unknown outcome
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- logging ---------------------------------------------------------------------

    def record(
        self, action: str, connector: int | str | None, ask: Any, outcome: str, **kw: Any
    ) -> None:
        with self._lock:
            self.seq += 1
            line = {
                "seq": self.seq,
                "t": round(time.time(), 3),
                "action": action,
                "connector": connector,
                "ask": ask,
                "outcome": outcome,
                **kw,
            }
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(line, default=str) + "\n")
            self.counts[action] = self.counts.get(action, 0) + 1
            key = outcome.split(" ", 1)[0]
            self.outcomes[key] = self.outcomes.get(key, 0) + 1

    # --- creating --------------------------------------------------------------------

    def new_body(self, name: str) -> dict[str, Any]:
        tags = sorted(self.rng.sample(TAGS, self.rng.randint(0, 2)))
        return {
            "name": name,
            "source_id": self.rng.choice(self.source_ids),
            "destination_id": self.destination_id,
            "schedule": self.rng.choice(SCHEDULES),
            "timezone": "UTC",
            "is_active": True,
            "tags": tags,
        }

    def create(self, name: str) -> int | None:
        body = self.new_body(name)
        exp = Expected(name, {body["schedule"]}, {"UTC"}, {True}, {tuple(body["tags"])})
        try:
            resp = self.api.call("POST", "/connectors", json=body)
        except NoAnswer as exc:
            exp.created = {True, False}
            self.pending_creates[name] = exp
            self.record("create", name, body, f"unknown {exc}")
            return None
        if resp.status_code == 201:
            cid = int(resp.json()["id"])
            self.expected[cid] = exp
            self.record("create", cid, body, "ok 201")
            return cid
        self._refused("create", name, body, resp)
        return None

    # --- one random change -----------------------------------------------------------

    def pick(self) -> tuple[int, Expected] | None:
        usable = [(cid, e) for cid, e in self.expected.items() if e.usable]
        return self.rng.choice(usable) if usable else None

    def step(self) -> None:
        live = sum(1 for e in self.expected.values() if e.deleted != {True})
        weights = {
            "schedule": 30,
            "pause": 18,
            "resume": 18,
            "tags": 10,
            "delete": 6 if live > self.target * 0.95 else 2,
            "create": 6 if live < self.target else 1,
            "run": 3,
        }
        action = self.rng.choices(list(weights), weights=list(weights.values()))[0]
        if action == "create":
            self.create(f"soak-{self.seq}-{self.rng.randrange(10**6)}")
            return
        picked = self.pick()
        if picked is None:
            return
        cid, exp = picked
        # Read it first: the version for the optimistic lock, and a check that what the
        # API says matches the log so far.
        try:
            resp = self.api.call("GET", f"/connectors/{cid}")
        except NoAnswer:
            return
        if resp.status_code != 200:
            self.mismatches.append(f"connector {cid}: GET answered {resp.status_code}")
            return
        now = resp.json()
        self._compare(cid, exp, now)
        if action == "schedule":
            body = {
                "schedule": self.rng.choice(SCHEDULES),
                "timezone": self.rng.choice(TIMEZONES),
                "version": now["version"],
            }
            self._send(cid, exp, "schedule", "PATCH", f"/connectors/{cid}", body,
                       {"schedule": body["schedule"], "timezone": body["timezone"]})  # fmt: skip
        elif action == "tags":
            tags = sorted(self.rng.sample(TAGS, self.rng.randint(0, 3)))
            body = {"tags": tags, "version": now["version"]}
            self._send(cid, exp, "tags", "PATCH", f"/connectors/{cid}", body, {"tags": tuple(tags)})
        elif action in ("pause", "resume"):
            self._send(cid, exp, action, "POST", f"/connectors/{cid}/{action}", None,
                       {"is_active": action == "resume"})  # fmt: skip
        elif action == "delete":
            self._send(cid, exp, "delete", "DELETE", f"/connectors/{cid}", None, {"deleted": True})
        elif action == "run":
            self._send(cid, exp, "run", "POST", f"/connectors/{cid}/run", None, {})

    def _send(
        self,
        cid: int,
        exp: Expected,
        action: str,
        method: str,
        path: str,
        body: Any,
        effect: dict[str, Any],
    ) -> None:
        try:
            resp = (
                self.api.call(method, path, json=body)
                if body is not None
                else self.api.call(method, path)
            )
        except NoAnswer as exc:
            for key, value in effect.items():
                exp.settle(key, value, answered=False)
            self.record(action, cid, body, f"unknown {exc}")
            return
        if resp.status_code in (200, 201, 202, 204):
            for key, value in effect.items():
                exp.settle(key, value, answered=True)
            self.record(action, cid, body, f"ok {resp.status_code}")
            return
        self._refused(action, cid, body, resp)

    def _refused(self, action: str, cid: int | str, body: Any, resp: httpx.Response) -> None:
        text = resp.text[:300]
        # Run now needs Prefect: 502 "cannot reach Prefect" while it is down is the answer
        # the API documents. Any other 5xx is a bug.
        needs_prefect = action == "run" and resp.status_code == 502
        if resp.status_code >= 500 and not needs_prefect:
            self.server_errors.append(f"{action} {cid}: {resp.status_code} {text}")
        self.record(action, cid, body, f"refused {resp.status_code}", answer=text)

    def _compare(self, cid: int, exp: Expected, now: dict[str, Any]) -> None:
        got = {
            "schedule": now["schedule"],
            "timezone": now["timezone"],
            "is_active": now["is_active"],
            "tags": tuple(sorted(now["tags"])),
        }
        for key, value in got.items():
            allowed = getattr(exp, key)
            if value not in allowed:
                self.mismatches.append(f"connector {cid}: {key} is {value!r}, log says {allowed}")
            else:
                allowed.intersection_update({value})  # what landed is now known

    # --- the loop --------------------------------------------------------------------

    def run(self, stop: threading.Event, pause: tuple[float, float]) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Unreachable as exc:
                self.record("unreachable", None, None, f"unreachable {exc}")
            stop.wait(self.rng.uniform(*pause))

    def changes_made(self) -> int:
        return sum(v for k, v in self.outcomes.items() if k in ("ok", "unknown"))
