"""CallTracker: AMI events in, one CallRecord per channel (Uniqueid) out. Pure: no I/O, no asyncio.

Times come from the caller (``at``, our monotonic clock), never from Asterisk's fields: the captures
show ANSWEREDTIME/DIALEDTIME are not trustworthy for Local channels, so ring time is measured from
DialBegin to DialEnd as we saw them. Unknown events and fields are ignored; malformed messages
(no Event, no Uniqueid) are dropped; events for a channel already hung up are stale and ignored
(Asterisk never reuses a Uniqueid).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import structlog

from callcentre.ami.protocol import event_name, field as get_field, field_int, known, parse_duration

log = structlog.get_logger(__name__)

LOST_IN_RESYNC = "lost in resync"
LOST_IN_RESTART = "lost in Asterisk restart"


class CallState(Enum):
    DOWN = "down"
    RINGING = "ringing"
    UP = "up"
    HUNG_UP = "hung_up"
    LOST = "lost"  # Asterisk no longer has it, but we never saw its Hangup


_STATE_BY_DESC = {
    "down": CallState.DOWN,
    "rsrvd": CallState.DOWN,
    "offhook": CallState.DOWN,
    "dialing": CallState.DOWN,
    "ring": CallState.RINGING,
    "ringing": CallState.RINGING,
    "up": CallState.UP,
    "busy": CallState.RINGING,
}


@dataclass
class DialAttempt:
    """One DialBegin → DialEnd, timed by our clock. ``caller_uniqueid`` is None for an Originate."""

    caller_uniqueid: str | None
    dest_uniqueid: str
    dest_channel: str
    dial_string: str
    began_at: float | None
    ended_at: float | None = None
    dial_status: str | None = None  # ANSWER, NOANSWER, BUSY, CANCEL, CONGESTION, CHANUNAVAIL…

    @property
    def ring_seconds(self) -> float | None:
        if self.began_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.began_at


@dataclass
class CallRecord:
    uniqueid: str
    channel: str
    linkedid: str | None
    caller_id_num: str | None
    caller_id_name: str | None
    created_at: float
    state: CallState = CallState.DOWN
    answered_at: float | None = None
    hungup_at: float | None = None
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    closed_reason: str | None = None  # None for a normal Hangup, else LOST_IN_*
    dtmf: str = ""
    dials: list[DialAttempt] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)  # every bridge entered, in order
    current_bridge: str | None = None
    local_peer: str | None = None  # the other half of a Local channel pair (;1 <-> ;2)
    queue: str | None = None
    queue_joined_at: float | None = None
    queue_left_at: float | None = None
    abandoned: bool = False
    abandon_hold_seconds: int | None = None  # as Asterisk reports it (HoldTime)

    @property
    def finished(self) -> bool:
        return self.state in (CallState.HUNG_UP, CallState.LOST)

    @property
    def is_local(self) -> bool:
        return self.channel.startswith("Local/")


@dataclass(frozen=True)
class OriginateOutcome:
    action_id: str
    response: str  # Success / Failure
    reason: int | None  # 4 answered, 3 no answer, 5 busy, 0 failed / no such extension
    uniqueid: str | None
    at: float


class CallListener:
    """Subclass and override what you need; register with :meth:`CallTracker.add_listener`.

    Called synchronously from :meth:`CallTracker.feed`, after the record is updated. Keep them
    cheap; an exception is logged and does not stop other listeners. ``hangup`` with cause None
    means the call was lost (restart or resync), not hung up normally.
    """

    def dial_begin(self, caller_uniqueid: str | None, dest_uniqueid: str, dest_channel: str, at: float) -> None:
        pass

    def dial_end(self, caller_uniqueid: str | None, dest_uniqueid: str, dial_status: str, at: float) -> None:
        pass

    def hangup(self, uniqueid: str, cause: int | None, at: float) -> None:
        pass

    def dtmf(self, uniqueid: str, digit: str, at: float) -> None:
        pass

    def originate_response(
        self, action_id: str, response: str, reason: int | None, uniqueid: str | None, at: float
    ) -> None:
        pass


class CallTracker:
    """Keeps the live calls and a bounded history of finished ones."""

    def __init__(self, *, max_finished: int = 2000, finished_ttl_seconds: float = 3600.0, max_outcomes: int = 1000) -> None:
        self._open: dict[str, CallRecord] = {}
        self._finished: OrderedDict[str, CallRecord] = OrderedDict()
        self._outcomes: OrderedDict[str, OriginateOutcome] = OrderedDict()
        self._listeners: list[CallListener] = []
        self._max_finished = max_finished
        self._ttl = finished_ttl_seconds
        self._max_outcomes = max_outcomes
        self._uptime: tuple[int, float] | None = None
        self.ignored = 0  # malformed or stale events dropped (for diagnostics)

    # ---- registration and queries ----------------------------------------------------------
    def add_listener(self, listener: CallListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: CallListener) -> None:
        self._listeners.remove(listener)

    def get(self, uniqueid: str) -> CallRecord | None:
        return self._open.get(uniqueid) or self._finished.get(uniqueid)

    def open_calls(self) -> list[CallRecord]:
        return list(self._open.values())

    def finished_calls(self) -> list[CallRecord]:
        return list(self._finished.values())

    def records(self) -> list[CallRecord]:
        return [*self._open.values(), *self._finished.values()]

    def originate_outcome(self, action_id: str) -> OriginateOutcome | None:
        return self._outcomes.get(action_id)

    # ---- input -----------------------------------------------------------------------------
    def feed(self, event: Mapping[str, object], at: float) -> None:
        """Apply one AMI event. Never raises on bad input: unknown or malformed events are ignored."""
        name = event_name(event)
        if not name:
            self.ignored += 1
            return
        handler = self._HANDLERS.get(name)
        if handler is not None:
            handler(self, event, at)
        self._prune(at)

    def resync(self, channels: Iterable[Mapping[str, object]], at: float) -> None:
        """Reconcile with Asterisk's CoreShowChannel list after a login.

        Open records absent from Asterisk are closed as "lost in resync"; channels we did not know
        are added. Other events in ``channels`` (CoreShowChannelsComplete) are skipped.
        """
        present: dict[str, Mapping[str, object]] = {}
        for ev in channels:
            if event_name(ev) != "CoreShowChannel":
                continue
            uid = known(get_field(ev, "Uniqueid"))
            if uid:
                present[uid] = ev
        for uid in [u for u in self._open if u not in present]:
            self._close_lost(uid, LOST_IN_RESYNC, at)
        for uid, ev in present.items():
            rec = self._open.get(uid)
            if rec is None:
                if uid in self._finished:
                    continue
                duration = parse_duration(get_field(ev, "Duration"))
                rec = self._ensure(uid, ev, at - duration if duration is not None else at)
                log.info("call added in resync", uniqueid=uid, channel=rec.channel)
            self._apply_state(rec, get_field(ev, "ChannelStateDesc"), at)
        self._prune(at)

    # ---- handlers --------------------------------------------------------------------------
    def _ensure(self, uid: str, ev: Mapping[str, object], at: float, prefix: str = "") -> CallRecord:
        rec = self._open.get(uid)
        if rec is None:
            rec = CallRecord(
                uniqueid=uid,
                channel=get_field(ev, prefix + "Channel"),
                linkedid=known(get_field(ev, prefix + "Linkedid")),
                caller_id_num=known(get_field(ev, prefix + "CallerIDNum")),
                caller_id_name=known(get_field(ev, prefix + "CallerIDName")),
                created_at=at,
            )
            self._open[uid] = rec
            log.debug("call created", uniqueid=uid, channel=rec.channel)
        return rec

    def _channel_record(self, ev: Mapping[str, object], at: float, create: bool = True) -> CallRecord | None:
        """The open record of the event's channel; None if malformed or stale (already hung up)."""
        uid = known(get_field(ev, "Uniqueid"))
        if uid is None:
            self.ignored += 1
            return None
        if uid in self._finished:
            self.ignored += 1
            return None
        if not create:
            return self._open.get(uid)
        rec = self._ensure(uid, ev, at)
        linkedid = known(get_field(ev, "Linkedid"))
        if linkedid:
            rec.linkedid = linkedid
        return rec

    def _apply_state(self, rec: CallRecord, desc: str, at: float) -> None:
        state = _STATE_BY_DESC.get(desc.strip().lower())
        if state is None or rec.finished:
            return
        if state is CallState.UP and rec.answered_at is None:
            rec.answered_at = at
            log.debug("call answered", uniqueid=rec.uniqueid, channel=rec.channel)
        if state is not rec.state:
            rec.state = state

    def _on_newchannel(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at)
        if rec is not None:
            self._apply_state(rec, get_field(ev, "ChannelStateDesc"), at)

    def _on_newstate(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at)
        if rec is None:
            return
        num = known(get_field(ev, "CallerIDNum"))
        if num and rec.caller_id_num is None:
            rec.caller_id_num = num
        self._apply_state(rec, get_field(ev, "ChannelStateDesc"), at)

    def _on_newcallerid(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at)
        if rec is not None:
            rec.caller_id_num = known(get_field(ev, "CallerIDNum")) or rec.caller_id_num
            rec.caller_id_name = known(get_field(ev, "CallerIDName")) or rec.caller_id_name

    def _on_local_bridge(self, ev: Mapping[str, object], at: float) -> None:
        one = known(get_field(ev, "LocalOneUniqueid"))
        two = known(get_field(ev, "LocalTwoUniqueid"))
        if not one or not two or one in self._finished or two in self._finished:
            self.ignored += 1
            return
        rec_one = self._ensure(one, ev, at, prefix="LocalOne")
        rec_two = self._ensure(two, ev, at, prefix="LocalTwo")
        rec_one.local_peer, rec_two.local_peer = two, one

    def _find_dial(self, caller: str | None, dest: str) -> DialAttempt | None:
        holder = self.get(caller) if caller else self.get(dest)
        if holder is None:
            return None
        for attempt in reversed(holder.dials):
            if attempt.dest_uniqueid == dest and attempt.caller_uniqueid == caller:
                return attempt
        return None

    def _on_dial_begin(self, ev: Mapping[str, object], at: float) -> None:
        dest = known(get_field(ev, "DestUniqueid"))
        if dest is None or dest in self._finished:
            self.ignored += 1
            return
        caller = known(get_field(ev, "Uniqueid"))
        caller_rec = self._channel_record(ev, at) if caller else None
        if caller and caller_rec is None:
            return  # the caller already hung up: stale
        dest_rec = self._ensure(dest, ev, at, prefix="Dest")
        attempt = DialAttempt(
            caller_uniqueid=caller,
            dest_uniqueid=dest,
            dest_channel=get_field(ev, "DestChannel"),
            dial_string=get_field(ev, "DialString"),
            began_at=at,
        )
        (caller_rec or dest_rec).dials.append(attempt)
        log.debug("dial began", uniqueid=caller or dest, dest_uniqueid=dest, dest_channel=attempt.dest_channel)
        self._notify("dial_begin", caller, dest, attempt.dest_channel, at)

    def _on_dial_end(self, ev: Mapping[str, object], at: float) -> None:
        dest = known(get_field(ev, "DestUniqueid"))
        if dest is None:
            self.ignored += 1
            return
        caller = known(get_field(ev, "Uniqueid"))
        status = get_field(ev, "DialStatus").strip().upper() or "UNKNOWN"
        attempt = self._find_dial(caller, dest)
        if attempt is None:
            holder = (self._open.get(caller) if caller else None) or self._open.get(dest)
            if holder is None:
                self.ignored += 1
                return
            attempt = DialAttempt(caller, dest, get_field(ev, "DestChannel"), get_field(ev, "DialString"), None)
            holder.dials.append(attempt)
        if attempt.ended_at is not None:
            return  # app_queue sends NOANSWER then CANCEL for one attempt: the first one counts
        attempt.ended_at = at
        attempt.dial_status = status
        log.debug(
            "dial ended", uniqueid=caller or dest, dest_uniqueid=dest, dial_status=status, ring_seconds=attempt.ring_seconds
        )
        self._notify("dial_end", caller, dest, status, at)

    def _on_hangup(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at)
        if rec is None:
            return
        rec.hangup_cause = field_int(ev, "Cause")
        rec.hangup_cause_text = known(get_field(ev, "Cause-txt"))
        self._close(rec, CallState.HUNG_UP, at, None)
        log.debug("call hung up", uniqueid=rec.uniqueid, channel=rec.channel, cause=rec.hangup_cause)
        self._notify("hangup", rec.uniqueid, rec.hangup_cause, at)

    def _on_dtmf_end(self, ev: Mapping[str, object], at: float) -> None:
        direction = get_field(ev, "Direction").strip().lower()
        if direction and direction != "received":
            return
        digit = get_field(ev, "Digit").strip()
        if len(digit) != 1:
            self.ignored += 1
            return
        rec = self._channel_record(ev, at)
        if rec is None:
            return
        rec.dtmf += digit
        self._notify("dtmf", rec.uniqueid, digit, at)

    def _on_bridge_enter(self, ev: Mapping[str, object], at: float) -> None:
        bridge = known(get_field(ev, "BridgeUniqueid"))
        rec = self._channel_record(ev, at)
        if rec is None or bridge is None:
            return
        rec.bridges.append(bridge)
        rec.current_bridge = bridge

    def _on_bridge_leave(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at, create=False)
        if rec is not None and rec.current_bridge == known(get_field(ev, "BridgeUniqueid")):
            rec.current_bridge = None

    def _on_queue_join(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at)
        if rec is not None:
            rec.queue = known(get_field(ev, "Queue"))
            rec.queue_joined_at = at

    def _on_queue_abandon(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at, create=False)
        if rec is not None:
            rec.abandoned = True
            rec.abandon_hold_seconds = field_int(ev, "HoldTime")
            log.debug("caller abandoned queue", uniqueid=rec.uniqueid, queue=rec.queue)

    def _on_queue_leave(self, ev: Mapping[str, object], at: float) -> None:
        rec = self._channel_record(ev, at, create=False)
        if rec is not None:
            rec.queue_left_at = at

    def _on_originate_response(self, ev: Mapping[str, object], at: float) -> None:
        action_id = get_field(ev, "ActionID").strip()
        if not action_id:
            self.ignored += 1
            return
        outcome = OriginateOutcome(
            action_id=action_id,
            response=get_field(ev, "Response").strip(),
            reason=field_int(ev, "Reason"),
            uniqueid=known(get_field(ev, "Uniqueid")),
            at=at,
        )
        self._outcomes[action_id] = outcome
        while len(self._outcomes) > self._max_outcomes:
            self._outcomes.popitem(last=False)
        log.debug("originate answered", action_id=action_id, response=outcome.response, reason=outcome.reason)
        self._notify("originate_response", action_id, outcome.response, outcome.reason, outcome.uniqueid, at)

    def _on_fully_booted(self, ev: Mapping[str, object], at: float) -> None:
        """Uptime 0 (or an uptime that went backwards) means Asterisk restarted: every call is gone."""
        uptime = field_int(ev, "Uptime")
        if uptime is None:
            return
        previous, self._uptime = self._uptime, (uptime, at)
        restarted = uptime == 0 or (previous is not None and uptime + 5 < previous[0] + (at - previous[1]))
        if restarted and self._open:
            log.info("asterisk restarted: closing every call", calls=len(self._open))
            for uid in list(self._open):
                self._close_lost(uid, LOST_IN_RESTART, at)

    _HANDLERS = {
        "Newchannel": _on_newchannel,
        "Newstate": _on_newstate,
        "NewCallerid": _on_newcallerid,
        "LocalBridge": _on_local_bridge,
        "DialBegin": _on_dial_begin,
        "DialEnd": _on_dial_end,
        "Hangup": _on_hangup,
        "DTMFEnd": _on_dtmf_end,
        "BridgeEnter": _on_bridge_enter,
        "BridgeLeave": _on_bridge_leave,
        "QueueCallerJoin": _on_queue_join,
        "QueueCallerAbandon": _on_queue_abandon,
        "QueueCallerLeave": _on_queue_leave,
        "OriginateResponse": _on_originate_response,
        "FullyBooted": _on_fully_booted,
    }

    # ---- closing and pruning ---------------------------------------------------------------
    def _close(self, rec: CallRecord, state: CallState, at: float, reason: str | None) -> None:
        rec.state = state
        rec.hungup_at = at
        rec.closed_reason = reason
        rec.current_bridge = None
        self._open.pop(rec.uniqueid, None)
        self._finished[rec.uniqueid] = rec

    def _close_lost(self, uid: str, reason: str, at: float) -> None:
        rec = self._open.get(uid)
        if rec is None:
            return
        self._close(rec, CallState.LOST, at, reason)
        log.info("call closed", uniqueid=uid, channel=rec.channel, reason=reason)
        self._notify("hangup", uid, None, at)

    def _prune(self, at: float) -> None:
        while self._finished:
            uid, rec = next(iter(self._finished.items()))
            expired = rec.hungup_at is not None and at - rec.hungup_at > self._ttl
            if len(self._finished) > self._max_finished or expired:
                self._finished.popitem(last=False)
            else:
                break

    def _notify(self, hook: str, *args: object) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, hook)(*args)
            except Exception:
                log.exception("call listener raised", hook=hook)
