"""This node in a cluster: what it runs when it leads, and how it serves callers when it does not.

``callcentre serve`` elects one leader among the servers on one PostgreSQL (one role, ``leader``,
:mod:`callcentre.cluster.leader`); on SQLite the only node is its own leader from start to stop.

**What runs on the leader only** (:class:`LeaderParts`, started by ``on_elected``, stopped by
``on_demoted``), and why:

* *call distribution* (a fresh :class:`~callcentre.distribution.ACDService` per term, its agents loaded
  afresh from the database, then an AMI resynchronisation so agents still busy on calls and the live
  calls are known): one owner decides which agent gets which caller; two would ring one agent for two
  callers;
* *the closure call-back scheduler*: two would both Originate the same attempt (the owner rung twice).
  Its claim of an attempt also checks the fencing term in the claiming transaction (:class:`LeaderGate`);
* *the webhook sender*: two would POST the same delivery twice. It checks the term before each POST;
* *the escalation loop*: warnings and escalations would be recorded and published twice;
* *the daily reconciliation*: one report a day, not one per node;
* *recording retention* (callcentre/service/recordings.py): it deletes expired files and marks their
  rows; two would race over the same files (``/health`` measures the disk on every node anyway);
* *the agent-action relay's server side* (:mod:`callcentre.cluster.relay`): state changes made on a
  follower's pages are carried out by the leader's distribution.

**What runs on every node**: the FastAGI IVR (tickets are made on whichever node the dialplan sent
the call to; their numbers stay unique across nodes, storage/writer.py), the AMI link to the
node's Asterisk (call records), the web pages, the live hub (a :class:`~callcentre.cluster.notify.ClusterHub`
on PostgreSQL, so what the leader publishes reaches pages on every node), the closing survey script.

**A caller who asks for a person on a follower** (the dialplan sends calls to the second server only
when the first failed: its leader may be gone) goes through :class:`LeaderConnector`: this node tries
the lock at once (:meth:`~callcentre.cluster.leader.PgLeaderElector.try_now`) and waits up to
``cluster.promote_wait_seconds`` for its own distribution to start; if it does not (the leader is
alive), the caller is handed back to the dialplan, whose fallback queue (``hotline-fallback``) rings
the agents' phones: CC_RESULT is not set to ``done``.

**A new call reaching a follower first** (the node named in ``CALLCENTRE_AGI`` restarted after a
fail-over and now follows): :class:`FollowerPass` ends the session with ``CC_RESULT=pass``, before
answering, when the dialplan has a second server and this is the call's first try; the dialplan then
gives the call, once, to ``CALLCENTRE_AGI2``: the leader, whose IVR and distribution serve it. A call
already on its second try is served here (see above). The agent leg of a queue call-back that the
leader placed is passed the same way (it is already answered: the dialplan's ``pass`` rule, not its
"still unanswered" one, moves it); the leader's distribution knows that call-back, a follower does not.

**On demotion while the process goes on** (the lock session was lost), callers waiting in this node's
queue are sent to the dialplan's fallback queue (:meth:`ACDService.hand_over_waiting`); a caller
already talking to an agent stays connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, Awaitable, Callable, Protocol, Sequence

import structlog

from callcentre.cluster.leader import FencedOut, check_fence
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.ivr import DialplanQueueConnector
from callcentre.domain.ports import CallerHungUp, Channel, ChannelError

log = structlog.get_logger("callcentre.cluster")

ROLE = "leader"
"""The one elected role: its holder runs every leader-only part."""


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RunningACD(Protocol):
    """Where the running call distribution is kept (``callcentre.app.Running``)."""

    acd: Any


class LeaderGate:
    """Whether this node may act as the leader now: asked by the parts that act on the outside world.

    :meth:`allows` is called inside the part's own write transaction, before it commits a claim
    (a call-back attempt set to dialling, a webhook about to be POSTed): on PostgreSQL it reads the
    leader row ``FOR SHARE`` with the term this node was elected with (:func:`check_fence`), so a node
    that lost the lead without knowing it yet cannot commit a claim after a new leader's election."""

    def __init__(self, role: str = ROLE, *, postgres: bool) -> None:
        self.role = role
        self._postgres = postgres
        self.term: int | None = None  # set while the leader-only parts run

    @property
    def leading(self) -> bool:
        return self.term is not None

    async def allows(self, session: Any) -> bool:
        term = self.term
        if term is None:
            return False
        if not self._postgres:
            return True  # SQLite: one node, its own leader while it runs
        try:
            await check_fence(session, self.role, term)
        except FencedOut as exc:
            log.warning("not the leader any more: leader-only write refused", error=str(exc))
            return False
        return True


class Distribution(Protocol):
    """One term's call distribution and the roster that feeds it (callcentre.distribution)."""

    acd: Any
    roster: Any


class LeaderParts:
    """Starts the leader-only parts on election and stops them on demotion (see the module docstring).

    ``make_distribution()`` returns a new ``(acd, roster)`` for each term, or None when call
    distribution is off; ``resync()`` is the AMI resynchronisation (None without AMI) and is run
    after distribution starts when the link is up (a link that logs in later resyncs by itself);
    ``loops`` are started in order after distribution and stopped in reverse before it; ``after_stop``
    is given a term's distribution once it has stopped (the recordings of its last calls are stored)."""

    def __init__(
        self,
        *,
        running: RunningACD,
        gate: LeaderGate,
        tracker: Any,
        make_distribution: Callable[[], tuple[Any, Any] | None],
        resync: Callable[[], Awaitable[None]] | None,
        ami_connected: Callable[[], bool],
        loops: Sequence[Startable],
        node: str,
        after_stop: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._running = running
        self.gate = gate
        self._tracker = tracker
        self._make_distribution = make_distribution
        self._resync = resync
        self._ami_connected = ami_connected
        self._loops = list(loops)
        self._after_stop = after_stop  # given each term's distribution once it has stopped (its recordings)
        self._started: list[Startable] = []
        self._dist: tuple[Any, Any] | None = None
        self._listening = False
        self.node = node
        self.terms = 0
        self.running = False  # every part started for the current term
        self._up = asyncio.Event()  # set while self.running

    async def elected(self, term: int) -> None:
        """``on_elected``: distribution first (its agents, then the calls AMI knows of), then the loops."""
        blog = log.bind(node=self.node, term=term)
        self.terms += 1
        parts = self._make_distribution()
        if parts is not None:
            acd, roster = parts
            self._dist = parts
            await roster.load(acd)
            await acd.start()
            self._tracker.add_listener(acd)  # DialBegin/DialEnd, DTMF, hang-ups, OriginateResponse
            self._listening = True
            roster.start(acd)
            self._running.acd = acd
            if self._resync is not None and self._ami_connected():
                try:
                    await self._resync()
                except Exception as exc:  # the link's next log-in resyncs again; distribution runs meanwhile
                    blog.warning("ami resync at election failed", error=f"{type(exc).__name__}: {exc}")
        self.gate.term = term
        for part in self._loops:
            await part.start()
            self._started.append(part)
        self.running = True
        self._up.set()
        blog.info("leader parts started", distribution=parts is not None, loops=len(self._started))

    async def demoted(self) -> None:
        """``on_demoted``: the loops stop first, then distribution (its waiting callers to the dialplan's queue)."""
        self.running = False
        self._up.clear()
        self.gate.term = None
        for part in reversed(self._started):
            try:
                await part.stop()
            except Exception:
                log.exception("a leader-only part failed to stop", part=type(part).__name__)
        self._started.clear()
        parts, self._dist = self._dist, None
        if parts is None:
            return
        acd, roster = parts
        self._running.acd = None
        handed = acd.hand_over_waiting()
        if handed:
            log.warning("call distribution stopped on this node: waiting callers go to the dialplan's queue",
                        node=self.node, callers=handed)
        await roster.stop()
        if self._listening:
            self._tracker.remove_listener(acd)
            self._listening = False
        await acd.stop()
        if self._after_stop is not None:
            await self._after_stop(acd)
        log.info("leader parts stopped", node=self.node)

    async def wait_running(self, limit: float) -> bool:
        """Wait at most ``limit`` seconds for this node's leader parts to be running."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._up.wait()
        return self.running


class LeaderConnector:
    """The IVR's ``AgentConnector`` on a node that may not run call distribution (see the module docstring)."""

    def __init__(self, running: RunningACD, parts: LeaderParts, *, try_now: Callable[[], None],
                 promote_wait_seconds: float) -> None:
        self._running = running
        self._parts = parts
        self._try_now = try_now
        self._promote_wait = promote_wait_seconds
        self._fallback = DialplanQueueConnector()

    async def _acd(self, call: CallInfo) -> Any:
        acd = self._running.acd
        if acd is not None or self._promote_wait <= 0:
            return acd
        call.log.info("call distribution does not run here: trying to take the lead at once",
                      wait=self._promote_wait)
        self._try_now()
        await self._parts.wait_running(self._promote_wait)
        return self._running.acd

    async def connect(self, ch: Channel, call: CallInfo, *, reason: str, skill: str | None, emergency: bool) -> Outcome:
        acd = await self._acd(call)
        if acd is None:
            call.log.warning("call distribution runs on another node: the dialplan's fallback queue takes the caller",
                             reason=reason)
            return await self._fallback.connect(ch, call, reason="not-leader", skill=skill, emergency=emergency)
        return await acd.connect(ch, call, reason=reason, skill=skill, emergency=emergency)


_ADDRESS = re.compile(r"[^-.:0-9A-Za-z\[\]]")  # what the dialplan's FILTER() keeps of an AGI address


class FollowerPass:
    """On a follower: hand a call on its first try to the dialplan's second server (``CC_RESULT=pass``).

    True (the session is to end at once with CC_RESULT=pass, nothing answered) only when all hold: this node
    follows and knows a leader; the call has not been through the dialplan's fail-over yet (``CC_AGI2``
    unset: this is the first server's try); and the dialplan has a second server other than this one
    (``CALLCENTRE_AGI2`` set and not the address this try used). With two nodes that second server is
    the leader. Anything unclear (a variable that cannot be read) serves the call here."""

    def __init__(self, elector: Any) -> None:
        self._elector = elector
        self.passed = 0

    async def __call__(self, ch: Any) -> bool:
        st = self._elector.status()
        if st.get("leader") or st.get("state") != "follower" or not st.get("leader_node"):
            return False
        try:
            if await ch.get_variable("CC_AGI2"):
                return False  # the second try already: this node serves it
            second = _ADDRESS.sub("", await ch.get_variable("CALLCENTRE_AGI2") or "")
            current = _ADDRESS.sub("", await ch.get_variable("CC_AGI") or "")
        except (CallerHungUp, ChannelError):
            return False
        if not second or second == current:
            return False
        self.passed += 1
        log.info("a follower passes a new call to the dialplan's second server", uniqueid=ch.uniqueid,
                 leader=st.get("leader_node"), second=second)
        return True


class NodeInfo:
    """This node's name and role, for /health, /metrics, the API and the wallboard's small print."""

    def __init__(self, name: str, elector: Any, *, clustered: bool) -> None:
        self.name = name
        self._elector = elector
        self.clustered = clustered  # PostgreSQL: other nodes may share the database

    @property
    def role(self) -> str:
        if self._elector.is_leader:
            return "leader"
        state = self._elector.status().get("state")
        return "follower" if state in ("follower", "connecting", "demoted") and self.clustered else "stopped"

    @property
    def is_leader(self) -> bool:
        return bool(self._elector.is_leader)

    def status(self) -> dict[str, Any]:
        st = self._elector.status()
        return {"name": self.name, "role": self.role, "term": st.get("term"), "leader_node": st.get("leader_node"),
                "clustered": self.clustered, "elector": st}

    def public(self) -> dict[str, Any]:
        """What a browser is shown: no counters, no errors."""
        st = self._elector.status()
        return {"name": self.name, "role": self.role, "term": st.get("term"), "leader_node": st.get("leader_node")}


__all__ = ["ROLE", "FollowerPass", "LeaderConnector", "LeaderGate", "LeaderParts", "NodeInfo"]
