"""Night service on the real PBX: the centre is closed and no agent is staffed.

An emergency rings the on-duty phone (``acd.on_duty_interface``) for at least 30 s, not two rings; an
ordinary caller who asks for a person is told the centre is closed and leaves a message that becomes a
ticket. Judged by the test's own AMI client (DialBegin/DialEnd to the on-duty phone), by what Asterisk's
``agi set debug on`` shows the caller heard, and by the database.
"""

from __future__ import annotations

import asyncio

import pytest

from callcentre.storage.models import TicketRow
from tests.pbx.test_pbx_ivr import Caller

DUTY = "Local/agentduty@cc-test-phones"


@pytest.mark.pbx_world(
    agents={},  # nobody staffed
    globals={"CC_PHONE_agentduty": "answer:2:5"},
    config={"acd": {"business_hours": {"days": []},  # closed every day
                    "on_duty_interface": DUTY, "satisfaction_survey": False}},
)
async def test_at_night_an_emergency_rings_the_on_duty_phone_and_a_caller_leaves_a_message(pbx):
    async def emergency() -> Caller:  # 赵磊, 1-1801: someone trapped in a lift
        c = await Caller(pbx, "15818001801").dial()
        await c.on("zh/greeting", "dtmf:8")
        await c.on("zh/emergency-menu-intro", "dtmf:2")
        await c.hears("zh/emergency-connecting")
        return c

    async def person() -> Caller:  # 周杰, 2-0202: 0 for a person, at night
        c = await Caller(pbx, "13102020202").dial()
        await c.on("zh/greeting", "dtmf:0")
        await c.hears("zh/closed-hours")
        await c.recording_starts()
        await c.act("play:hello-world", "dtmf:#")
        await c.hears("zh/message-saved")
        await c.hears("zh/goodbye")
        return c

    emg, pers = await asyncio.gather(emergency(), person())

    # The emergency: the on-duty phone rang (DialBegin from the caller's hotline leg) and answered.
    begin = await pbx.ami.wait_for("DialBegin", 20, Channel=emg.leg)
    assert begin["DestChannel"].startswith(DUTY), begin
    await pbx.ami.wait_for("DialEnd", 20, Channel=emg.leg, DialStatus="ANSWER")
    assert "zh/closed-hours" not in emg.heard()
    [t] = await pbx.rows(TicketRow, TicketRow.call_uniqueid == emg.uniqueid)
    assert (t.kind, t.priority) == ("emergency", "major"), vars(t)

    # The ordinary caller: told the centre is closed, never dialled anywhere, a message ticket.
    assert not [e for e in pbx.ami.events if e.get("Event") == "DialBegin" and e.get("Channel") == pers.leg]
    [m] = await pbx.rows(TicketRow, TicketRow.call_uniqueid == pers.uniqueid)
    assert m.kind == "message", vars(m)
