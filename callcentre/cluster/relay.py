"""Agents' state changes and supervision made on a follower's pages, carried out by the leader.

Call distribution runs on the leader only, but an agent's or a supervisor's browser may be connected
to any node. A follower does not refuse "ready", "pause" or "listen in": it relays the request over
the cluster hub (PostgreSQL ``NOTIFY``, :mod:`callcentre.cluster.notify`) to the leader, whose
:class:`AgentRelayServer` runs it through the same :class:`~callcentre.service.desk.agents.AgentService`
a request made on the leader goes through (permissions checked again there, against the actor's row
in the database), and answers on a topic only the asking process listens to. The follower's request
waits at most ``cluster.relay_timeout_seconds``; with no answer (no leader right now, or it is
cut off) the request fails with 503 ``leader_unreachable`` and is not retried by the server: the
person sees it and tries again. Domain refusals come back as the same kind and code (409
``illegal_state_change``, 403 ``forbidden``, ...).

A follower's wallboard and agent pages show the leader's picture: the leader publishes its snapshot
whenever it changes (callcentre/web's push loop) and the follower keeps the latest one
(:meth:`~callcentre.cluster.notify.ClusterHub.remote_snapshot`).

Transfers (:mod:`callcentre.service.desk.calls`) are call distribution too: a follower relays an
agent's transfer, its completion or cancellation, and the list of targets, the same way.

Topics starting with ``cluster:`` are never offered to browsers (the websockets subscribe to
``wallboard`` and ``agent:<id>`` only).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import structlog

from callcentre.domain.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from callcentre.domain.ports import StorageUnavailable
from callcentre.domain.users import AgentAction, SuperviseMode, UserView
from callcentre.tasks import cancel_and_wait
from callcentre.web.hub import WALLBOARD, Hub, SubscriberDropped, Subscription, agent_topic

log = structlog.get_logger("callcentre.cluster")

REQUEST_TOPIC = "cluster:agent-request"
REPLY_TOPIC_PREFIX = "cluster:agent-reply:"
_REASON = re.compile(r"^[a-z_]{1,32}$")
_UNIQUEID = re.compile(r"^[0-9]{1,20}\.[0-9]{1,10}\Z")
_TRANSFER_KINDS = ("blind", "attended")
_ERROR_KINDS: dict[str, type[Exception]] = {
    "not_found": NotFound, "invalid": Invalid, "conflict": Conflict, "forbidden": Forbidden, "unavailable": Unavailable,
}


def _kind(exc: BaseException) -> str | None:
    for name, cls in _ERROR_KINDS.items():
        if isinstance(exc, cls):
            return name
    return None


class AgentRelay:
    """The asking side, on every node: used by AgentService when call distribution does not run here."""

    def __init__(self, hub: Hub, *, node: str, timeout_seconds: float, snapshot_max_age_seconds: float) -> None:
        self._hub = hub
        self.node = node
        self.timeout_seconds = timeout_seconds
        self.snapshot_max_age_seconds = snapshot_max_age_seconds
        self.reply_topic = f"{REPLY_TOPIC_PREFIX}{node}:{uuid.uuid4().hex[:12]}"
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Only a hub shared with other nodes can reach a leader elsewhere."""
        return bool(getattr(self._hub, "cluster_wide", False)) and self._task is not None

    def snapshot(self) -> dict[str, Any] | None:
        """The leader's latest wallboard snapshot as received here (None: none recent, or no cluster)."""
        remote = getattr(self._hub, "remote_snapshot", None)
        return remote(self.snapshot_max_age_seconds) if remote is not None else None

    async def start(self) -> None:
        if getattr(self._hub, "cluster_wide", False):
            # Subscribed before start() returns: no reply can come before we listen for it.
            self._task = asyncio.create_task(self._replies(self._hub.subscribe(self.reply_topic)),
                                             name="agent-relay-replies")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    async def _replies(self, sub: Subscription) -> None:
        while True:
            try:
                while True:
                    self._resolve(await sub.get())
            except SubscriberDropped:
                log.warning("agent relay replies fell behind; subscribing again")
            finally:
                sub.close()
            sub = self._hub.subscribe(self.reply_topic)

    def _resolve(self, encoded: str) -> None:
        try:
            reply = json.loads(encoded)
            fut = self._pending.get(str(reply.get("id")))
        except (ValueError, AttributeError):
            log.warning("bad agent relay reply dropped", size=len(encoded))
            return
        if fut is not None and not fut.done():
            fut.set_result(reply)

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.available:
            raise Unavailable("call distribution is not running", code="acd_unavailable")
        rid = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._hub.publish(REQUEST_TOPIC, {**request, "id": rid, "reply_to": self.reply_topic, "from": self.node})
            async with asyncio.timeout(self.timeout_seconds):
                reply = await fut
        except TimeoutError:
            log.warning("the leader did not answer a relayed agent request", request=request.get("kind"),
                        timeout=self.timeout_seconds)
            raise Unavailable(f"call distribution runs on another node, which did not answer within "
                              f"{self.timeout_seconds:g} s; try again", code="leader_unreachable") from None
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            cls = _ERROR_KINDS.get(str(err.get("kind")), Unavailable)
            raise cls(str(err.get("message") or "refused by the leader"), code=str(err.get("code") or "unavailable"))
        return reply

    async def change_state(self, actor: UserView, agent_id: int, action: AgentAction, reason: str | None) -> dict[str, Any] | None:
        reply = await self._ask({"kind": "state", "actor": actor.id, "agent_id": int(agent_id), "action": action.value,
                                 "reason": reason})
        agent = reply.get("agent")
        return agent if isinstance(agent, dict) else None

    async def supervise(self, actor: UserView, agent_id: int, mode: SuperviseMode) -> None:
        await self._ask({"kind": "supervise", "actor": actor.id, "agent_id": int(agent_id), "mode": mode.value})

    async def transfer_targets(self, actor: UserView) -> dict[str, Any]:
        return _result(await self._ask({"kind": "transfer_targets", "actor": actor.id}))

    async def transfer(self, actor: UserView, uniqueid: str, kind: str, target: dict[str, str]) -> dict[str, Any]:
        return _result(await self._ask({"kind": "transfer", "actor": actor.id, "uniqueid": uniqueid,
                                        "transfer_kind": kind, "target": target}))

    async def transfer_complete(self, actor: UserView, uniqueid: str) -> dict[str, Any]:
        return _result(await self._ask({"kind": "transfer_complete", "actor": actor.id, "uniqueid": uniqueid}))

    async def transfer_cancel(self, actor: UserView, uniqueid: str) -> dict[str, Any]:
        return _result(await self._ask({"kind": "transfer_cancel", "actor": actor.id, "uniqueid": uniqueid}))


def _result(reply: dict[str, Any]) -> dict[str, Any]:
    result = reply.get("result")
    if not isinstance(result, dict):
        raise Unavailable("the leader's answer had no result", code="leader_error")
    return result


class AgentRelayServer:
    """The answering side, on the leader only (a leader-only loop: started on election, stopped on demotion)."""

    def __init__(self, hub: Hub, agents: Any, users: Any, *, calls: Any = None) -> None:
        """``agents``: the desk's AgentService; ``users``: the users repository (the actor is read again);
        ``calls``: the desk's CallService (transfers; None: transfer requests are refused)."""
        self._hub = hub
        self._agents = agents
        self._users = users
        self._calls = calls
        self._task: asyncio.Task[None] | None = None
        self.handled = 0

    async def start(self) -> None:
        if getattr(self._hub, "cluster_wide", False):
            # Subscribed before start() returns: a request sent once this node leads is never missed.
            self._task = asyncio.create_task(self._serve(self._hub.subscribe(REQUEST_TOPIC)), name="agent-relay-server")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _serve(self, sub: Subscription) -> None:
        while True:
            try:
                while True:
                    encoded = await sub.get()
                    try:
                        request = json.loads(encoded)
                    except ValueError:
                        log.warning("bad agent relay request dropped", size=len(encoded))
                        continue
                    await self._handle(request)
            except SubscriberDropped:
                log.warning("agent relay requests fell behind; subscribing again")
            finally:
                sub.close()
            sub = self._hub.subscribe(REQUEST_TOPIC)

    async def _handle(self, request: Any) -> None:
        if not isinstance(request, dict):
            return
        reply_to = request.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to.startswith(REPLY_TOPIC_PREFIX) or len(reply_to) > 120:
            log.warning("agent relay request without a reply topic dropped")
            return
        reply: dict[str, Any] = {"id": str(request.get("id", ""))[:64]}
        try:
            reply.update(await self._run(request))
            reply["ok"] = True
        except (NotFound, Invalid, Conflict, Forbidden, Unavailable) as exc:
            reply.update(ok=False, error={"kind": _kind(exc), "code": exc.code, "message": str(exc)})
        except StorageUnavailable as exc:
            log.warning("relayed agent request failed: storage unavailable", error=str(exc))
            reply.update(ok=False, error={"kind": "unavailable", "code": "storage_unavailable",
                                          "message": "the database is unavailable; try again shortly"})
        except Exception:
            log.exception("relayed agent request failed", kind=request.get("kind"))
            reply.update(ok=False, error={"kind": "unavailable", "code": "leader_error",
                                          "message": "the leader could not carry out the request; it has been logged"})
        self.handled += 1
        self._hub.publish(reply_to, reply)

    async def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("kind")
        if isinstance(kind, str) and kind.startswith("transfer"):
            return await self._transfer(request, kind)
        actor_id, agent_id = request.get("actor"), request.get("agent_id")
        if not isinstance(actor_id, int) or not isinstance(agent_id, int):
            raise Invalid("actor and agent_id must be integers")
        actor = await self._actor(actor_id)
        if kind == "state":
            try:
                action = AgentAction(request.get("action"))
            except ValueError:
                raise Invalid("unknown action") from None
            reason = request.get("reason")
            if reason is not None and (not isinstance(reason, str) or not _REASON.match(reason)):
                raise Invalid("reason must be a short lower-case word such as break or lunch")
            after = await self._agents.change_state(actor, agent_id, action, reason)
            log.info("relayed agent state change", agent_id=agent_id, action=action.value, by=actor.login,
                     origin=str(request.get("from", ""))[:40])
            now = self._agents.server_time()
            self._hub.publish(agent_topic(agent_id), {"type": "state", "agent": after, "server_time": now})
            self._hub.publish(WALLBOARD, {"type": "snapshot", **self._agents.snapshot()})
            return {"agent": after}
        if kind == "supervise":
            try:
                mode = SuperviseMode(request.get("mode"))
            except ValueError:
                raise Invalid("unknown mode") from None
            await self._agents.supervise(actor, agent_id, mode)
            return {}
        raise Invalid("unknown request")

    async def _actor(self, actor_id: Any) -> UserView:
        if not isinstance(actor_id, int):
            raise Invalid("actor must be an integer")
        actor = await self._users.get(actor_id)
        if actor is None or not actor.active:
            raise Forbidden("the requesting user no longer exists or is not active")
        return actor

    async def _transfer(self, request: dict[str, Any], kind: str) -> dict[str, Any]:
        """A transfer made on a follower's page, checked again here as the web layer checks it."""
        if self._calls is None:
            raise Unavailable("transfers are not available on the leader", code="acd_unavailable")
        actor = await self._actor(request.get("actor"))
        origin = str(request.get("from", ""))[:40]
        if kind == "transfer_targets":
            return {"result": await self._calls.targets(actor)}
        uniqueid = request.get("uniqueid")
        if not isinstance(uniqueid, str) or not _UNIQUEID.match(uniqueid):
            raise Invalid("uniqueid must look like 1796543556.43")
        if kind == "transfer":
            how, target = request.get("transfer_kind"), request.get("target")
            if how not in _TRANSFER_KINDS:
                raise Invalid("kind must be blind or attended", code="invalid_kind")
            if (not isinstance(target, dict) or len(target) != 1
                    or not all(isinstance(k, str) and isinstance(v, str) for k, v in target.items())):
                raise Invalid("target must be one of agent, skill or department", code="invalid_target")
            out = await self._calls.transfer(actor, uniqueid, how, target)
        elif kind == "transfer_complete":
            out = await self._calls.complete(actor, uniqueid)
        elif kind == "transfer_cancel":
            out = await self._calls.cancel(actor, uniqueid)
        else:
            raise Invalid("unknown request")
        log.info("relayed transfer request", request=kind, uniqueid=uniqueid, by=actor.login, origin=origin)
        return {"result": out}


__all__ = ["REQUEST_TOPIC", "AgentRelay", "AgentRelayServer"]
