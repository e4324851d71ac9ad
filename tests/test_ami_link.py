"""AMILink against a real socket (tests/ami_replay.py speaking the captured wire format)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest
from ami_replay import AMIReplayServer, captured_reply, with_action_id
from structlog.testing import capture_logs

from callcentre.ami.link import AMIActionError, AMIDisconnected, AMILink, AMITimeout, LinkState
from callcentre.ami.protocol import AMIValueRejected
from callcentre.config import AMIConfig

SECRET = "verify-secret"


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Poll (bounded) until the predicate holds; fail the test otherwise."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within} s")


class Harness:
    def __init__(self, server: AMIReplayServer, **overrides: object) -> None:
        settings: dict[str, object] = {
            "host": "127.0.0.1",
            "port": server.port,
            "ping_interval_seconds": 5.0,
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.2,
            "action_timeout_seconds": 1.0,
        }
        settings.update(overrides)
        self.config = AMIConfig(**settings)
        self.events: list = []
        self.logins = 0
        self.secret = SECRET
        self.fail_on_event = False

    def on_event(self, message) -> None:
        self.events.append(message)
        if self.fail_on_event:
            raise RuntimeError("listener bug")

    async def on_login(self) -> None:
        self.logins += 1

    def link(self, secret: str | None = None) -> AMILink:
        return AMILink(
            self.config, secret or self.secret, on_event=self.on_event, on_login=self.on_login, rng=random.Random(7)
        )

    def event_names(self) -> list[str]:
        return [m.get("Event") for m in self.events]


@pytest.fixture
async def server() -> AsyncIterator[AMIReplayServer]:
    srv = AMIReplayServer(secret=SECRET)
    await srv.start()
    yield srv
    await srv.close()


async def started(h: Harness, secret: str | None = None) -> AMILink:
    link = h.link(secret)
    await link.start()
    await eventually(lambda: link.connected and h.logins >= 1)
    return link


async def test_login_and_resync_hook(server: AMIReplayServer) -> None:
    h = Harness(server)
    link = await started(h)
    try:
        login = server.actions("Login")[0]
        assert (login.get("Username"), login.get("Secret")) == ("callcentre", SECRET)
        assert h.logins == 1
        assert "FullyBooted" in h.event_names()
        reply = await link.ping()
        assert reply["Ping"] == "Pong"
        status = link.status()
        assert status["connected"] is True and status["since"] is not None
        assert status["reconnects"] == 0 and status["login_failures"] == 0
    finally:
        await link.stop()
    assert link.state is LinkState.STOPPED and not link.connected


async def test_bad_login_logs_one_error_and_backs_off(server: AMIReplayServer) -> None:
    h = Harness(server, login_failures_before_backoff=2, reconnect_min_seconds=0.02, reconnect_max_seconds=0.25,
                login_retry_seconds=0.25)
    link = h.link("wrong")
    with capture_logs() as logs:
        await link.start()
        await eventually(lambda: len(server.actions("Login")) >= 4)
        await asyncio.sleep(0.5)
        await link.stop()
    attempts = len(server.actions("Login"))
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["event"] == "ami login failed" and errors[0]["reason"] == "Authentication failed"
    # After 2 failures every retry waits at least reconnect_max/2: no flood.
    assert attempts <= 4 + 0.5 / 0.125 + 1
    assert attempts - 1 <= link.status()["login_failures"] <= attempts  # the last one may be cut by stop()
    assert "Authentication failed" in link.status()["last_error"]
    assert h.logins == 0


def test_backoff_is_capped_and_jumps_to_max_after_login_failures(server: AMIReplayServer) -> None:
    h = Harness(server, reconnect_min_seconds=0.5, reconnect_max_seconds=10.0, login_failures_before_backoff=3,
                login_retry_seconds=10.0)
    link = h.link()
    delays = [link._backoff(n) for n in range(12)]
    assert all(0.5 <= d <= 10.0 for d in delays)
    assert delays[0] <= 0.5 and delays[-1] >= 5.0
    link._login_failures = 3
    assert 5.0 <= link._backoff(0) <= 10.0


async def test_restart_reconnects_and_calls_on_login_again(server: AMIReplayServer) -> None:
    h = Harness(server)
    link = await started(h)
    try:
        await server.restart(refuse_for=0.3)
        await eventually(lambda: h.logins == 2)
        assert link.connected
        assert "Shutdown" in h.event_names()
        booted = [m for m in h.events if m.get("Event") == "FullyBooted"]
        assert [m["Uptime"] for m in booted] == ["2352", "0"]
        assert link.status()["reconnects"] == 1
        assert server.connections >= 2
    finally:
        await link.stop()


async def test_half_open_link_detected_after_missed_pings(server: AMIReplayServer) -> None:
    h = Harness(server, ping_interval_seconds=0.1, missed_pings=2)
    link = await started(h)
    try:
        server.go_half_open()
        mark = len(server.received)
        await eventually(lambda: server.logins == 2)
        unanswered = [a for a in server.received[mark:] if a.connection == 1 and a.name == "Ping"]
        assert len(unanswered) == 2
        await eventually(lambda: link.connected)
        assert (await link.ping())["Ping"] == "Pong"
    finally:
        await link.stop()


async def test_injection_rejected_before_anything_is_written(server: AMIReplayServer) -> None:
    h = Harness(server)
    link = await started(h)
    try:
        before = len(server.received)
        with pytest.raises(AMIValueRejected):
            await link.send({"Action": "Hangup", "Channel": "SIP/x\r\n\r\nAction: Originate\r\nChannel: SIP/evil"})
        with pytest.raises(AMIValueRejected):
            await link.hangup("SIP/x\nAction: Originate")
        with pytest.raises(AMIValueRejected):
            await link.originate(channel="Local/1@x", context="c", exten="s", variables={"TICKET": "T1,EVIL=1"})
        with pytest.raises(AMIValueRejected):
            await link.send({"Action": "Hangup", "Channel": "x" * (h.config.value_max_length + 1)})
        await link.ping()  # a round trip proves nothing else reached the server
        assert [a.name for a in server.received[before:]] == ["Ping"]
    finally:
        await link.stop()


async def test_response_error_raises_action_error(server: AMIReplayServer) -> None:
    name = "ami-queue-abandon-and-errors.txt"
    server.replies["nosuchaction"] = with_action_id(captured_reply(name, "bad-1"), "bad-1")
    h = Harness(server)
    link = await started(h)
    try:
        with pytest.raises(AMIActionError, match="Invalid/unknown command: NoSuchAction") as info:
            await link.send({"Action": "NoSuchAction"})
        assert info.value.response["Response"] == "Error"
        assert link.connected
    finally:
        await link.stop()


async def test_event_list_returns_events_up_to_complete(server: AMIReplayServer) -> None:
    server.replies["coreshowchannels"] = with_action_id(captured_reply("ami-dial-agents.txt", "csc-2"), "csc-2")
    h = Harness(server)
    link = await started(h)
    try:
        events = await link.core_show_channels()
        assert [e["Event"] for e in events] == ["CoreShowChannel"] * 4 + ["CoreShowChannelsComplete"]
        assert "CoreShowChannel" not in h.event_names()  # list items belong to the reply
    finally:
        await link.stop()


async def test_originate_returns_action_id_matching_originate_response(server: AMIReplayServer) -> None:
    h = Harness(server)
    link = await started(h)
    try:
        action_id = await link.originate(
            channel="Local/agent1@sim-agents", context="capture-callback", exten="survey",
            caller_id='"Property Service" <95000>', timeout_ms=6000, variables={"TICKET": "T20261122-0001"},
        )
        sent = server.actions("Originate")[0]
        assert sent.get("ActionID") == action_id and sent.get("Async") == "true"
        assert sent.all("Variable") == ["TICKET=T20261122-0001"] and sent.get("Timeout") == "6000"
        await server.push(
            f"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {action_id}\r\nResponse: Success\r\n"
            "Channel: Local/agent1@sim-agents-00000021;1\r\nReason: 4\r\nUniqueid: 1795354647.66\r\n\r\n".encode()
        )
        await eventually(lambda: "OriginateResponse" in h.event_names())
        event = [m for m in h.events if m.get("Event") == "OriginateResponse"][0]
        assert event["ActionID"] == action_id and event["Reason"] == "4"
    finally:
        await link.stop()


async def test_in_flight_action_fails_on_drop_and_is_never_resent(server: AMIReplayServer) -> None:
    server.drop_on.add("originate")
    h = Harness(server)
    link = await started(h)
    try:
        with pytest.raises(AMIDisconnected):
            await link.originate(channel="Local/8200@capture-connect", context="sim-caller", exten="s")
        server.drop_on.clear()
        await eventually(lambda: h.logins == 2 and link.connected)
        await link.ping()
        await asyncio.sleep(0.1)
        assert len(server.actions("Originate")) == 1
    finally:
        await link.stop()


async def test_malformed_message_and_failing_listener_do_not_kill_the_link(server: AMIReplayServer) -> None:
    h = Harness(server)
    link = await started(h)
    try:
        h.fail_on_event = True
        await server.push(
            b"Value: \r\n\r\n"
            b"not a header line at all\r\n\r\n"
            b"Event: Hangup\r\nUniqueid: 1.2\r\nCause: 16\r\n\r\n"
        )
        await eventually(lambda: "Hangup" in h.event_names())
        assert link.connected
        assert (await link.ping())["Ping"] == "Pong"
        assert link.status()["malformed_messages"] == 2
    finally:
        await link.stop()


async def test_messages_split_anywhere_across_reads_arrive_whole_and_in_order(server: AMIReplayServer) -> None:
    """The reader takes whatever has arrived; a message cut by TCP (inside a header, inside a UTF-8
    character, inside the blank line that ends it) waits for its end and is delivered once."""
    h = Harness(server)
    link = await started(h)
    try:
        stream = b"".join(
            f"Event: Newchannel\r\nUniqueid: 1.{n}\r\nCallerIDName: 张伟 {n}\r\n\r\n".encode() for n in range(40)
        )
        cuts = sorted({3, 17, 18, 19, 20, 21, 22, 45, 46, 47, 48, 100, 101, 250, len(stream) - 2, len(stream) - 1})
        start = 0
        for cut in [*cuts, len(stream)]:
            await server.push(stream[start:cut])
            await asyncio.sleep(0.005)  # let each piece be read on its own
            start = cut
        ours = lambda: [m for m in h.events if m.get("Event") == "Newchannel"]  # noqa: E731
        await eventually(lambda: len(ours()) >= 40)
        assert [m.get("Uniqueid") for m in ours()] == [f"1.{n}" for n in range(40)]
        assert [m.get("CallerIDName") for m in ours()] == [f"张伟 {n}" for n in range(40)]
        assert link.status()["malformed_messages"] == 0 and link.connected
    finally:
        await link.stop()


async def test_a_message_over_the_size_limit_ends_the_session(server: AMIReplayServer) -> None:
    from callcentre.ami.link import MESSAGE_MAX_BYTES

    h = Harness(server)
    link = await started(h)
    try:
        with capture_logs() as logs:
            await server.push(b"Event: Newchannel\r\nUniqueid: 1.1\r\n\r\nEvent: Huge\r\nData: ")
            for _ in range(MESSAGE_MAX_BYTES // 65536 + 2):
                await server.push(b"x" * 65536)
            await eventually(lambda: link.status()["reconnects"] >= 1 and link.connected and h.logins >= 2, within=5.0)
        lost = [e for e in logs if e["event"] == "ami link lost"]
        assert lost and f"over {MESSAGE_MAX_BYTES} bytes" in lost[0]["reason"]
        assert "Newchannel" in h.event_names() and "Huge" not in h.event_names()
    finally:
        await link.stop()


async def test_not_connected_raises_disconnected(server: AMIReplayServer) -> None:
    link = Harness(server).link()
    with pytest.raises(AMIDisconnected):
        await link.ping()


async def test_timeout_raises_and_late_reply_is_dropped(server: AMIReplayServer) -> None:
    h = Harness(server, ping_interval_seconds=30.0)
    link = await started(h)
    try:
        server.go_half_open()
        with pytest.raises(AMITimeout):
            await link.send({"Action": "QueuePause", "Interface": "Local/agent2@sim-agents/n", "Paused": "true"}, timeout=0.1)
        assert link.connected  # one slow action does not drop the link; the ping watchdog decides
    finally:
        await link.stop()


async def test_stop_fails_pending_actions(server: AMIReplayServer) -> None:
    h = Harness(server, ping_interval_seconds=30.0)
    link = await started(h)
    server.go_half_open()
    pending = asyncio.create_task(link.send({"Action": "Status"}))
    await server.wait_for_action("Status")
    await link.stop()
    with pytest.raises(AMIDisconnected):
        await pending
