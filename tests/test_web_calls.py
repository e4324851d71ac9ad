"""The transfer API (web/api/calls.py): the form of a request is checked before anything reaches call
distribution, the actor is the logged-in user, and the domain's refusals come back with their codes."""

from __future__ import annotations

from typing import Any

import pytest

from callcentre.domain.transfers import TransferForbidden, TransferRefused, TransfersUnavailable, UnknownCall
from tests import test_web_api
from tests.test_web_api import Env

env = test_web_api.env  # the web tests' world: a real app over a seeded database, a fake ACD
push_interval = test_web_api.push_interval

UID = "1796543556.43"


def transfers_on(acd: Any) -> list[tuple]:
    """Give the web tests' FakeACD the TransferControl methods; returns what they received."""
    seen: list[tuple] = []
    acd.refuse = None

    async def transfer(uniqueid, kind, target, *, actor_agent_id, actor_login, supervisor):
        seen.append(("transfer", uniqueid, kind, target, actor_agent_id, actor_login, supervisor))
        if acd.refuse:
            raise acd.refuse
        return {"uniqueid": uniqueid, "kind": kind, "state": "moving", "target": {"kind": "agent", "code": "8", "name": "B"}}

    async def transfer_complete(uniqueid, *, actor_agent_id, supervisor):
        seen.append(("complete", uniqueid, actor_agent_id, supervisor))
        return {"uniqueid": uniqueid, "state": "completed"}

    async def transfer_cancel(uniqueid, *, actor_agent_id, supervisor):
        seen.append(("cancel", uniqueid, actor_agent_id, supervisor))
        return {"uniqueid": uniqueid, "state": "returned"}

    acd.transfer, acd.transfer_complete, acd.transfer_cancel = transfer, transfer_complete, transfer_cancel
    acd.transfer_targets = lambda: {"enabled": True, "agents": [], "skills": [{"code": "fees", "ready": 1}],
                                    "departments": []}
    return seen


async def test_a_transfer_request_reaches_distribution_only_in_its_checked_form(env: Env) -> None:
    seen = transfers_on(env.acd)
    c, csrf = await env.login("agent1")
    h = {"X-CSRF-Token": csrf, "Origin": env.origin}
    url = f"/api/calls/{UID}/transfer"
    bad = [
        ("/api/calls/1;Hangup/transfer", {"kind": "blind", "target": {"agent": "8"}}, "invalid_request"),
        (url, {"kind": "sideways", "target": {"agent": "8"}}, "invalid_kind"),
        (url, {"kind": "blind"}, "invalid_target"),
        (url, {"kind": "blind", "target": {"agent": "8", "skill": "fees"}}, "invalid_target"),
        (url, {"kind": "blind", "target": {"agent": "8\r\nAction: Hangup"}}, "invalid_target"),
        (url, {"kind": "blind", "target": {"skill": "Fees!"}}, "invalid_target"),
        (url, {"kind": "blind", "target": {"context": "default"}}, "invalid_target"),
        (url, {"kind": "blind", "target": {"agent": True}}, "invalid_target"),
    ]
    for path, body, code in bad:
        r = await c.post(path, json=body, headers=h)
        assert (r.status, (await r.json())["error"]["code"]) == (400, code), (path, body)
    assert seen == []
    r = await c.post(url, json={"kind": "blind", "target": {"agent": 8}})  # no CSRF token
    assert r.status == 403 and seen == []

    r = await c.post(url, json={"kind": "attended", "target": {"agent": 8}}, headers=h)
    assert r.status == 202 and (await r.json())["transfer"]["state"] == "moving"
    assert seen[-1] == ("transfer", UID, "attended", {"agent": "8"}, str(env.ids["agent1"]), "agent1", False)
    for step, state in (("complete", "completed"), ("cancel", "returned")):
        r = await c.post(f"{url}/{step}", headers=h)
        assert r.status == 200 and (await r.json())["transfer"]["state"] == state
    assert [s[0] for s in seen] == ["transfer", "complete", "cancel"]
    r = await c.get("/api/transfer-targets")
    assert r.status == 200 and (await r.json())["skills"] == [{"code": "fees", "ready": 1}]
    # a supervisor is flagged as one
    s, scsrf = await env.login("sup")
    r = await s.post(url, json={"kind": "blind", "target": {"skill": "fees"}},
                     headers={"X-CSRF-Token": scsrf, "Origin": env.origin})
    assert r.status == 202 and seen[-1][-1] is True


@pytest.mark.parametrize("error, status, code", [
    (UnknownCall("no call 1.2"), 404, "unknown_call"),
    (TransferForbidden("not your call"), 403, "transfer_forbidden"),
    (TransferRefused("in progress", code="transfer_in_progress"), 409, "transfer_in_progress"),
    (TransfersUnavailable("the AMI link is down"), 503, "transfers_unavailable"),
])
async def test_refusals_keep_their_codes(env: Env, error: Exception, status: int, code: str) -> None:
    transfers_on(env.acd)
    env.acd.refuse = error
    c, csrf = await env.login("agent1")
    r = await c.post(f"/api/calls/{UID}/transfer", json={"kind": "blind", "target": {"agent": "8"}},
                     headers={"X-CSRF-Token": csrf, "Origin": env.origin})
    body = await r.json()
    assert (r.status, body["error"]["code"], body["error"]["message"]) == (status, code, str(error))


async def test_without_call_distribution_transfers_are_unavailable(env: Env) -> None:
    env.services.acd = None
    c, csrf = await env.login("agent1")
    r = await c.post(f"/api/calls/{UID}/transfer", json={"kind": "blind", "target": {"agent": "8"}},
                     headers={"X-CSRF-Token": csrf, "Origin": env.origin})
    assert r.status == 503 and (await r.json())["error"]["code"] == "transfers_unavailable"
