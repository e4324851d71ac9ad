"""The composition root's pieces: parts built in dependency order (nothing started, nothing connected),
AMI events fanned out in a fixed order, live messages and the wallboard's alerts."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from callcentre.ami.link import AMIDisconnected, AMILink
from callcentre.app import _agi_router, build_services
from callcentre.config import Config, load_config
from callcentre.domain.ports import FakeClock
from callcentre.service.alerts import WALLBOARD, WallboardNotifier, as_alert
from callcentre.service.ami_events import AMIEvents

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


class RecordingHub:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: dict[str, Any]) -> int:
        self.sent.append((topic, payload))
        return 1


class AlertKeeper:
    def __init__(self) -> None:
        self.alerts: deque[dict[str, Any]] = deque(maxlen=30)


def test_service_events_become_wallboard_alerts_that_call_distribution_keeps() -> None:
    hub, acd = RecordingHub(), AlertKeeper()
    notifier = WallboardNotifier(hub, FakeClock(T0), acd=lambda: acd)
    notifier.publish(WALLBOARD, {"type": "promise_breach", "ticket": "R20261124-0001", "details": {"not": "kept"}})
    notifier.publish(WALLBOARD, {"type": "snapshot", "queue": []})
    notifier.publish("agent:7", {"type": "screen_pop", "call": {}})
    (topic, alert), snapshot, pop = hub.sent
    assert topic == WALLBOARD and alert["type"] == "alert"
    assert alert["alert"] == {"type": "promise_breach", "ticket": "R20261124-0001", "kind": "promise_breach",
                              "message": "Ticket R20261124-0001 is past its promised time: escalated to the quality department",
                              "at": T0.isoformat()}
    assert list(acd.alerts) == [alert["alert"]]  # for a wallboard that connects later
    assert snapshot == (WALLBOARD, {"type": "snapshot", "queue": []}) and pop[0] == "agent:7"


def test_alerts_without_call_distribution_still_reach_the_wallboard() -> None:
    hub = RecordingHub()
    notifier = WallboardNotifier(hub, FakeClock(T0), acd=lambda: None)
    notifier.reconciliation_ready(T0.date(), "Daily reconciliation 2026-11-24  (clean)\n\n  intake 3\n", "csv")
    ((topic, payload),) = hub.sent
    assert topic == WALLBOARD and payload["alert"]["kind"] == "daily_reconciliation"
    assert payload["alert"]["message"] == "Daily reconciliation for 2026-11-24 is ready"
    assert as_alert({"kind": "callback_needs_person", "ticket": "C1"}, FakeClock(T0))["message"] == "callback needs person: ticket C1"


async def test_ami_events_reach_their_handlers_in_subscription_order() -> None:
    events, seen = AMIEvents(), []
    events.subscribe(lambda m: seen.append(("tracker", m["Event"])))
    events.subscribe(lambda m: seen.append(("acd", m["Event"])))

    async def resync() -> None:
        seen.append(("login", None))

    events.on_login(resync)
    events.dispatch({"Event": "Newchannel"})
    await events.logged_in()
    assert seen == [("tracker", "Newchannel"), ("acd", "Newchannel"), ("login", None)]


def _cfg(tmp_path: Path, **env: str) -> Config:
    return load_config(None, environ={"CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}", **env})


async def test_parts_are_built_without_starting_or_connecting_anything(tmp_path: Path) -> None:
    services = build_services(_cfg(tmp_path, CALLCENTRE_AMI_SECRET="s3cret-for-test",
                                   CALLCENTRE_WEBHOOKS__URLS="[http://127.0.0.1:9/hook]",
                                   CALLCENTRE_WEBHOOK_SECRET="hook-secret"), FakeClock(T0))
    try:
        assert isinstance(services.ami, AMILink) and not services.ami.connected  # built, so its users get it
        assert services.webhooks is not None and not services.agi.listening
        # Built, not running: distribution runs (services.acd) only once start-up has loaded its agents.
        assert services.distribution is not None and services.roster is not None and services.ivr is not None
        assert services.acd is None and not services.ready.is_set()
        assert not (tmp_path / "cc.db").exists()  # the engine connects on first use only
        # The AMI link's events reach the call records before anything else.
        services.ami_events.dispatch({"Event": "Newchannel", "Channel": "PJSIP/trunk-00000001", "Uniqueid": "1.1",
                                      "Linkedid": "1.1", "CallerIDNum": "13800138000", "ChannelState": "4"})
        assert [r.uniqueid for r in services.tracker.open_calls()] == ["1.1"]
    finally:
        await services.engine.dispose()


async def test_without_an_ami_link_call_backs_fail_as_disconnected(tmp_path: Path) -> None:
    services = build_services(_cfg(tmp_path, CALLCENTRE_AMI__ENABLED="false"), FakeClock(T0))
    try:
        assert services.ami is None and services.webhooks is None
        with pytest.raises(AMIDisconnected):
            await services.callbacks._originate("Local/1@x", "c", "s", {}, None, 1000, "a1")  # noqa: SLF001
    finally:
        await services.engine.dispose()


def test_the_fastagi_router_sends_new_hotline_callers_to_the_dialplan_while_draining(tmp_path: Path) -> None:
    from callcentre.app import Running

    class Env:
        def __init__(self, script: str) -> None:
            self.script = script

    class Survey:
        async def run(self, channel: Any) -> None: ...

    class IVR:
        async def run(self, channel: Any) -> None: ...

    running, ivr, survey = Running(), IVR(), Survey()
    router = _agi_router(running, ivr, survey)  # type: ignore[arg-type]
    assert router(Env("hotline")) == ivr.run and router(Env("survey")) == survey.run
    assert router(Env("callback")) is not None and router(Env("nothing")) is None
    running.draining = True
    assert router(Env("hotline")) is None and router(Env("survey")) == survey.run
