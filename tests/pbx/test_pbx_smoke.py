"""First contact with the real PBX: a known owner reports a repair."""

from __future__ import annotations


async def test_known_owner_reports_a_water_repair(pbx):
    # 张伟, 1-1201, calls from 138-0013-8000: 2 = repair, 1 = water, describes it, '#' ends the recording
    await pbx.call("13800138000", ["wait:2", "dtmf:2", "wait:2", "dtmf:1", "wait:7", "play:hello-world",
                                   "dtmf:#", "wait:30", "hangup"], name="Zhang Wei")
    tickets = await pbx.eventually_tickets(1, 60)
    assert len(tickets) == 1, tickets
    print("\n".join(pbx.agi_debug()[-20:]))
