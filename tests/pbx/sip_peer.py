"""A second throw-away Asterisk that plays the far end of chan_sip: agent desk phones and the carrier.

The first Asterisk (the one under test, with our dialplans) gets static chan_sip peers pointing at this
"phone box" (``host``/``port``, no registration), exactly as an operator writes peers for phones or a
trunk with fixed addresses::

    [agent3]                     ; an agent's desk phone: Dial(SIP/agent3) rings it
    type = peer
    host = 127.0.0.1
    port = <box port>
    defaultuser = agent3         ; the request URI names the phone: sip:agent3@...

    [carrier]                    ; the trunk: Dial(SIP/carrier/13800138000)
    type = peer
    host = 127.0.0.1
    port = <box port>

The box takes every INVITE as a guest into ``[box-in]``: ``agent...`` goes to the harness's
``[cc-test-phones]`` (behaviour from the box's own ``CC_PHONE_<agent>`` globals), numbers go to
``[cc-test-owner]`` (``CC_OWNER``). Its log therefore shows which phone rang and with what number.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.pbx.asterisk import AsteriskInstance, free_port

BOX_DIALPLAN = r"""
[box-in]
exten => _age[n]t.,1,Goto(cc-test-phones,${EXTEN},1)
exten => _[+0-9].,1,Goto(cc-test-owner,${EXTEN},1)
"""


class SipPhoneBox:
    """The far end: start it, point the first Asterisk's peers at it, read what rang."""

    def __init__(self, binary: str, phones: dict[str, str], owner: str = "answer:1::20") -> None:
        self.port = free_port()
        self.ast = AsteriskInstance(
            binary, agi_port=free_port(), sip_port=self.port, extra_dialplan=BOX_DIALPLAN,
            globals_extra={"CC_OWNER": owner, **{f"CC_PHONE_{name}": spec for name, spec in phones.items()}},
            sip_conf=f"""[general]
udpbindaddr = 127.0.0.1:{self.port}
context = box-in
allowguest = yes
disallow = all
allow = ulaw
""")

    def start(self) -> None:
        self.ast.start()

    def stop(self, keep: Path | None = None) -> None:
        self.ast.stop()
        self.ast.cleanup(keep)

    def peers_conf(self, sip_port: int, agents: list[str], trunk: str | None = "carrier") -> str:
        """A whole sip.conf for the first Asterisk: its own bind address plus static peers to the box."""
        out = [f"[general]\nudpbindaddr = 127.0.0.1:{sip_port}\ncontext = cc-test-nowhere\nallowguest = no\n"]
        common = f"type = peer\nhost = 127.0.0.1\nport = {self.port}\ndisallow = all\nallow = ulaw\n"
        for name in agents:
            out.append(f"[{name}]\n{common}defaultuser = {name}\n")
        if trunk:
            out.append(f"[{trunk}]\n{common}")
        return "\n".join(out)

    async def attach(self, first: AsteriskInstance, agents: list[str], trunk: str | None = "carrier",
                     limit: float = 10.0) -> None:
        """Give ``first`` the peers (sip.conf rewritten, ``sip reload``, as an operator does) and wait for them."""
        (first.etc / "sip.conf").write_text(self.peers_conf(first.sip_port, agents, trunk))
        await first.acli("sip reload")
        wanted = [*agents, *([trunk] if trunk else [])]
        end = time.monotonic() + limit
        while True:
            shown = await first.acli("sip show peers")
            if all(f"\n{name}" in shown or shown.startswith(name) for name in wanted):
                return
            if time.monotonic() > end:
                raise AssertionError(f"chan_sip peers {wanted} not loaded:\n{shown}")
            await asyncio.sleep(0.2)

    def log(self) -> str:
        return self.ast.full_log()
