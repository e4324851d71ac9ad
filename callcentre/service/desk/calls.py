"""Calls at the desk: transferring the call an agent is on, blind or attended (consult, then complete or
cancel), and the targets one may pick (agents, skill groups, departments).

Entry, precondition checks, effect: the form of the request is the handler's, who may do it and
whether it is possible now are call distribution's (:class:`~callcentre.domain.transfers.TransferControl`),
which answers with the domain's transfer errors. The browser names a call (its uniqueid), a kind and a
target id; it never names a channel, a context or a token.

On a cluster node that does not run call distribution (a follower), every request here is relayed to
the leader, which runs it through its own CallService (:mod:`callcentre.cluster.relay`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import structlog

from callcentre.domain.transfers import TransferControl, TransfersUnavailable
from callcentre.domain.users import SUPERVISORS, UserView

log = structlog.get_logger(__name__)


class TransfersElsewhere(Protocol):
    """Call distribution on another node (the cluster's leader; callcentre.cluster.relay.AgentRelay)."""

    @property
    def available(self) -> bool: ...

    async def transfer_targets(self, actor: UserView) -> dict[str, Any]: ...

    async def transfer(self, actor: UserView, uniqueid: str, kind: str, target: dict[str, str]) -> dict[str, Any]: ...

    async def transfer_complete(self, actor: UserView, uniqueid: str) -> dict[str, Any]: ...

    async def transfer_cancel(self, actor: UserView, uniqueid: str) -> dict[str, Any]: ...


class CallService:
    def __init__(self, acd: Callable[[], Any], *, elsewhere: TransfersElsewhere | None = None) -> None:
        """``acd``: call distribution while it runs (None when off or not started yet); ``elsewhere``:
        where requests go when call distribution does not run on this node (another node leads)."""
        self._acd = acd
        self._elsewhere = elsewhere

    def _running(self) -> TransferControl:
        acd = self._acd()
        if acd is None:
            raise TransfersUnavailable("call distribution is not running")
        return acd

    def _relayed(self) -> TransfersElsewhere | None:
        if self._acd() is None and self._elsewhere is not None and self._elsewhere.available:
            return self._elsewhere
        return None

    async def targets(self, actor: UserView) -> dict[str, Any]:
        relay = self._relayed()
        if relay is not None:
            return await relay.transfer_targets(actor)
        return self._running().transfer_targets()

    async def transfer(self, actor: UserView, uniqueid: str, kind: str, target: dict[str, str]) -> dict[str, Any]:
        relay = self._relayed()
        if relay is not None:  # logged by the leader, where the transfer is made
            return await relay.transfer(actor, uniqueid, kind, target)
        out = await self._running().transfer(uniqueid, kind, target, actor_agent_id=str(actor.id),
                                             actor_login=actor.login, supervisor=actor.role in SUPERVISORS)
        log.info("transfer requested", uniqueid=uniqueid, kind=kind, target=out["target"], by=actor.login)
        return out

    async def complete(self, actor: UserView, uniqueid: str) -> dict[str, Any]:
        relay = self._relayed()
        if relay is not None:
            return await relay.transfer_complete(actor, uniqueid)
        out = await self._running().transfer_complete(uniqueid, actor_agent_id=str(actor.id),
                                                      supervisor=actor.role in SUPERVISORS)
        log.info("transfer completed", uniqueid=uniqueid, by=actor.login)
        return out

    async def cancel(self, actor: UserView, uniqueid: str) -> dict[str, Any]:
        relay = self._relayed()
        if relay is not None:
            return await relay.transfer_cancel(actor, uniqueid)
        out = await self._running().transfer_cancel(uniqueid, actor_agent_id=str(actor.id),
                                                    supervisor=actor.role in SUPERVISORS)
        log.info("transfer cancelled", uniqueid=uniqueid, by=actor.login)
        return out


__all__ = ["CallService"]
