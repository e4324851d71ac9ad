"""The second FastAGI server in dialplans/extensions_callcentre.conf (CALLCENTRE_AGI2), run step by step.

A small interpreter executes our own dialplan lines (Set, GotoIf, Goto, AGI, Hangup and the functions
FILTER and CHANNEL(state) they use) for every combination of what the first and the second server do,
and checks the rule in the file's header: the second server gets a call once, and only when the first
cannot have started it; a call the first server answered is never restarted elsewhere. The real-PBX
test (tests/pbx/test_pbx_failover.py) checks the interpreter's premises on Asterisk itself.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import pytest

from tests.test_dialplans import Dialplan, Step, _filter_allowed, read_dialplan
from tests.test_dialplans import EXTENSIONS as EXTENSIONS_CONF

FIRST, SECOND = "10.0.0.1:4573", "10.0.0.2:4573"


@dataclass
class Server:
    """What one FastAGI address does with a call: AGISTATUS it leaves, CC_RESULT it sets, whether it answered."""

    status: str = "SUCCESS"  # FAILURE (nothing listening / a command failed), SUCCESS, HANGUP
    done: bool = False
    answers: bool = False
    passes: bool = False  # CC_RESULT=pass: did nothing with the call, hands it on (a cluster follower)


@dataclass
class Outcome:
    agis: list[tuple[str, str]] = field(default_factory=list)  # (address, script) in order
    end: str = ""  # "hangup" (handled), "queue" (fallback queue), "agent-told", "gone" (AGI hangup)
    warnings: list[str] = field(default_factory=list)


_VAR = re.compile(r"\$\{([^${}]*)\}")
_ATOM = re.compile(r'^"(?P<a>[^"]*)" (?P<op>!?=) "(?P<b>[^"]*)"$')


class Interpreter:
    """Runs our dialplan's call paths; any application it does not know is an error, not a guess."""

    def __init__(self, dp: Dialplan, globals_: dict[str, str], servers: dict[str, Server], state: str,
                 channel_vars: dict[str, str] | None = None) -> None:
        self.dp, self.globals, self.servers, self.state = dp, globals_, servers, state
        self.vars: dict[str, str] = dict(channel_vars or {})
        self.out = Outcome()

    def subst(self, text: str) -> str:
        while (m := _VAR.search(text)) is not None:
            inner = m[1]
            if inner.startswith("FILTER(") and inner.endswith(")"):
                spec, _, arg = inner[len("FILTER("):-1].partition(",")
                allowed = _filter_allowed(spec)
                value = "".join(ch for ch in arg if ch in allowed)
            elif inner == "CHANNEL(state)":
                value = self.state
            elif inner == "CHANNEL":
                value = "Local/4008001234@cc-test-trunk-00000001;2"
            elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", inner):
                value = self.vars.get(inner, self.globals.get(inner, ""))
            else:
                raise AssertionError(f"the interpreter does not know ${{{inner}}}")
            text = text[:m.start()] + value + text[m.end():]
        return text

    def truth(self, expr: str) -> bool:
        assert expr.startswith("$[") and expr.endswith("]"), expr
        body = self.subst(expr[2:-1])
        result = False
        for alternative in body.split(" | "):
            ok = True
            for atom in alternative.split(" & "):
                m = _ATOM.match(atom.strip())
                assert m, f"the interpreter does not know the condition {atom!r}"
                ok = ok and ((m["a"] == m["b"]) == (m["op"] == "="))
            result = result or ok
        return result

    def where(self, step: Step, dest: str) -> tuple[str, str, str]:
        parts = [p.strip() for p in dest.split(",")]
        if len(parts) == 1:
            return step.context, step.exten, parts[0]
        if len(parts) == 2:
            return step.context, parts[0], parts[1]
        return parts[0], parts[1], parts[2]

    def run(self, context: str, exten: str, limit: int = 200) -> Outcome:
        steps = self.dp.contexts[context][exten]
        i = 0
        for _ in range(limit):
            step = steps[i]
            ending = (context, exten, step.label) in {("callcentre-fallback", "s", "fallback"),
                                                      ("callcentre-fallback", "agent-leg", "told")}
            nxt = i + 1
            if step.app in ("NoOp", "Verbose"):
                pass
            elif step.app == "Log":
                self.out.warnings.append(self.subst(step.data))
            elif step.app == "Set":
                name, _, value = step.data.partition("=")
                self.vars[name] = self.subst(value)
            elif step.app in ("GotoIf", "Goto"):
                if step.app == "GotoIf":
                    cond, _, dests = step.data.rpartition("?")
                    true_dest, _, false_dest = dests.partition(":")
                    dest = true_dest if self.truth(cond) else false_dest
                else:
                    dest = step.data
                if dest:
                    context, exten, label = self.where(step, dest)
                    steps = self.dp.contexts[context][exten]
                    nxt = int(label) - 1 if label.isdigit() else next(k for k, s in enumerate(steps) if s.label == label)
            elif step.app == "AGI":
                url = self.subst(step.data.split(",")[0])
                m = re.fullmatch(r"agi://([^/]+)/(\w+)", url)
                assert m, url
                self.out.agis.append((m[1], m[2]))
                server = self.servers.get(m[1], Server(status="FAILURE"))  # nobody there: FAILURE
                if server.answers:
                    self.state = "Up"
                if server.done:
                    self.vars["CC_RESULT"] = "done"
                elif server.passes:
                    self.vars["CC_RESULT"] = "pass"
                self.vars["AGISTATUS"] = server.status
                if server.status == "HANGUP":
                    self.out.end = "gone"  # AGI() ends the dialplan
                    return self.out
            elif step.app == "Hangup":
                self.out.end = "hangup"
                return self.out
            else:
                raise AssertionError(f"{step.where}: the interpreter does not run {step.app}")
            if ending:  # the fallback itself (queue, voicemail, apology) is tests/test_dialplans.py's
                self.out.end = "queue" if exten == "s" else "agent-told"
                return self.out
            i = nxt
        raise AssertionError(f"more than {limit} steps: a loop? {self.out}")


@pytest.fixture(scope="module")
def dialplan() -> Dialplan:
    return read_dialplan(EXTENSIONS_CONF)


ENTRIES = {"hotline": ("callcentre-hotline", "s"), "survey": ("callcentre-callback", "survey"),
           "callback": ("callcentre-callback", "callback"), "transfer": ("callcentre-transfer", "_X.")}


def call(dp: Dialplan, entry: str, first: Server, second: Server | None, *, agi2: str | None = SECOND,
         state: str = "Ring") -> Outcome:
    globals_ = {"CALLCENTRE_AGI": FIRST}
    if agi2 is not None:
        globals_["CALLCENTRE_AGI2"] = agi2
    servers = {FIRST: first}
    if second is not None:
        servers[SECOND] = second
    context, exten = ENTRIES[entry]
    channel_vars = {"TICKET": "R20261206-0001", "EXTEN": "4815162342"}
    return Interpreter(dp, globals_, servers, state, channel_vars).run(context, exten)


# ------------------------------------------------------------------ the cases the tests on the PBX also run


def test_nothing_listening_on_the_first_the_second_takes_the_call(dialplan: Dialplan) -> None:
    out = call(dialplan, "hotline", Server(status="FAILURE"), Server(answers=True, done=True))
    assert out.agis == [(FIRST, "hotline"), (SECOND, "hotline")] and out.end == "hangup"
    assert any(f"{FIRST} did not take" in w and f"trying {SECOND}" in w for w in out.warnings)


def test_accepted_and_closed_at_once_the_second_takes_the_call(dialplan: Dialplan) -> None:
    out = call(dialplan, "hotline", Server(status="SUCCESS"), Server(answers=True, done=True))
    assert out.agis == [(FIRST, "hotline"), (SECOND, "hotline")] and out.end == "hangup"


def test_answered_then_lost_goes_to_the_queue_not_to_the_second(dialplan: Dialplan) -> None:
    for status in ("SUCCESS", "FAILURE"):  # a crash, or a command that failed mid-call
        out = call(dialplan, "hotline", Server(status=status, answers=True), Server(answers=True, done=True))
        assert out.agis == [(FIRST, "hotline")] and out.end == "queue", status


def test_neither_server_up_the_caller_reaches_the_queue_after_one_try_each(dialplan: Dialplan) -> None:
    out = call(dialplan, "hotline", Server(status="FAILURE"), None)
    assert out.agis == [(FIRST, "hotline"), (SECOND, "hotline")] and out.end == "queue"
    assert any("fallback for" in w and "AGISTATUS=FAILURE" in w for w in out.warnings)


def test_without_a_second_server_nothing_changes(dialplan: Dialplan) -> None:
    for agi2 in (None, "", FIRST, "!!!"):  # unset, empty, the same server, nothing left after FILTER
        out = call(dialplan, "hotline", Server(status="FAILURE"), Server(answers=True, done=True), agi2=agi2)
        assert out.agis == [(FIRST, "hotline")] and out.end == "queue", agi2
        assert not any("did not take" in w for w in out.warnings)


def test_the_survey_and_the_call_back_move_only_when_the_first_could_not_be_reached(dialplan: Dialplan) -> None:
    # Their channels are answered before the AGI (an Originate that was picked up).
    for entry, failed_end in (("survey", "queue"), ("callback", "agent-told")):
        out = call(dialplan, entry, Server(status="FAILURE"), Server(done=True), state="Up")
        assert out.agis == [(FIRST, entry), (SECOND, entry)] and out.end == "hangup", entry
        out = call(dialplan, entry, Server(status="FAILURE"), None, state="Up")
        assert out.agis == [(FIRST, entry), (SECOND, entry)] and out.end == failed_end, entry
        out = call(dialplan, entry, Server(status="SUCCESS"), Server(done=True), state="Up")
        assert out.agis == [(FIRST, entry)] and out.end == failed_end, entry


def test_a_transferred_caller_goes_to_the_second_only_when_the_first_cannot_be_reached(dialplan: Dialplan) -> None:
    """The caller was answered long before (state Up): the second server only when the first could not be
    reached at all; it does not know the token and leaves the caller to the queue: a person either way."""
    out = call(dialplan, "transfer", Server(status="FAILURE"), Server(status="SUCCESS"), state="Up")
    assert out.agis == [(FIRST, "transfer"), (SECOND, "transfer")] and out.end == "queue"
    out = call(dialplan, "transfer", Server(status="SUCCESS"), Server(done=True), state="Up")
    assert out.agis == [(FIRST, "transfer")] and out.end == "queue"  # the first lost it mid-transfer
    out = call(dialplan, "transfer", Server(status="SUCCESS", done=True), None, state="Up")
    assert out.end == "hangup"
    [agi] = [s for s in dialplan.contexts["callcentre-transfer-run"]["s"] if s.app == "AGI"]
    assert agi.data == "agi://${CC_AGI}/transfer,${CC_XFER}"


def test_the_consultation_leg_is_an_agent_told_never_a_caller_queued(dialplan: Dialplan) -> None:
    """Answered (an agent's leg): the second server only when the first could not be reached or passed
    it on (a cluster follower: its leader started the consultation); else the agent is told."""
    def consult(first: Server, second: Server, agi2: str | None = SECOND) -> Outcome:
        globals_ = {"CALLCENTRE_AGI": FIRST, **({"CALLCENTRE_AGI2": agi2} if agi2 is not None else {})}
        interp = Interpreter(dialplan, globals_, {FIRST: first, SECOND: second}, "Up", {"EXTEN": "1234567890"})
        out = interp.run("callcentre-consult", "_X.")
        assert interp.vars["CC_XFER"] == "1234567890"
        return out

    for status in ("SUCCESS", "HANGUP"):  # the first took it: only it knows it
        out = consult(Server(status=status), Server(done=True))
        assert out.agis == [(FIRST, "consult")], status
        assert out.end == ("gone" if status == "HANGUP" else "agent-told"), status
    out = consult(Server(status="FAILURE"), Server(done=True))
    assert out.agis == [(FIRST, "consult"), (SECOND, "consult")] and out.end == "hangup"
    out = consult(Server(status="FAILURE"), Server(status="SUCCESS"))  # the second does not know it either
    assert out.agis == [(FIRST, "consult"), (SECOND, "consult")] and out.end == "agent-told"
    out = consult(Server(passes=True), Server(done=True))
    assert out.agis == [(FIRST, "consult"), (SECOND, "consult")] and out.end == "hangup"
    out = consult(Server(passes=True), Server(passes=True))  # never a third try
    assert out.agis == [(FIRST, "consult"), (SECOND, "consult")] and out.end == "agent-told"
    for agi2 in (None, FIRST):  # no other server
        out = consult(Server(passes=True), Server(done=True), agi2=agi2)
        assert out.agis == [(FIRST, "consult")] and out.end == "agent-told", agi2
    [agi] = [s for s in dialplan.contexts["callcentre-consult-run"]["s"] if s.app == "AGI"]
    assert agi.data == "agi://${CC_AGI}/consult,${CC_XFER}"


def test_the_ticket_argument_reaches_the_second_survey_too(dialplan: Dialplan) -> None:
    out = call(dialplan, "survey", Server(status="FAILURE"), Server(done=True), state="Up")
    assert out.end == "hangup"
    # The AGI line itself carries the ticket: check the substituted URL of both tries.
    steps = [s for s in dialplan.contexts["callcentre-callback"]["survey"] if s.app == "AGI"]
    assert [s.data for s in steps] == ["agi://${CC_AGI}/survey,${CC_TICKET}"]


# ------------------------------------------------------------------ every combination


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_rule_holds_for_every_combination(dialplan: Dialplan, entry: str) -> None:
    checked = 0
    for (status, done, answers), state, agi2, second_up in itertools.product(
            [("FAILURE", False, False), ("FAILURE", False, True), ("SUCCESS", False, False),
             ("SUCCESS", False, True), ("SUCCESS", True, True), ("HANGUP", False, False), ("HANGUP", False, True)],
            ("Ring", "Up"), (None, FIRST, SECOND), (True, False)):
        first = Server(status=status, done=done, answers=answers)
        second = Server(answers=True, done=True) if second_up else None
        out = call(dialplan, entry, first, second, agi2=agi2, state=state)
        checked += 1
        case = (entry, status, done, answers, state, agi2, second_up, out)
        first_started = answers and state != "Up"  # it answered an unanswered call: it may have done things
        may_move = (agi2 == SECOND and status != "HANGUP" and not done
                    and ((state != "Up" and not first_started) or (state == "Up" and status == "FAILURE")))
        assert out.agis[0] == (FIRST, entry), case
        assert len(out.agis) == (2 if may_move else 1), case
        assert len(out.agis) == len(set(out.agis)), case  # never the same server twice
        if status == "HANGUP":
            assert out.end == "gone", case
        elif done or (may_move and second_up):
            assert out.end == "hangup", case
        else:
            assert out.end == ("agent-told" if entry == "callback" else "queue"), case
    assert checked == 7 * 2 * 3 * 2


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_server_that_passes_hands_the_call_to_the_second_once_answered_or_not(dialplan: Dialplan, entry: str) -> None:
    """CC_RESULT=pass (a cluster node that is not the leader): the second server, once, whatever the
    channel's state; never back to the first, and never a third try when the second passes too."""
    told = "agent-told" if entry == "callback" else "queue"
    for state in ("Ring", "Up"):
        out = call(dialplan, entry, Server(passes=True), Server(answers=True, done=True), state=state)
        assert out.agis == [(FIRST, entry), (SECOND, entry)] and out.end == "hangup", (entry, state)
        out = call(dialplan, entry, Server(passes=True), Server(passes=True), state=state)
        assert out.agis == [(FIRST, entry), (SECOND, entry)] and out.end == told, (entry, state)
        for agi2 in (None, FIRST):  # no other server to pass to: the fallback, as before
            out = call(dialplan, entry, Server(passes=True), Server(answers=True, done=True), agi2=agi2, state=state)
            assert out.agis == [(FIRST, entry)] and out.end == told, (entry, state, agi2)
    # AGI() ending in HANGUP ends the dialplan: a pass does not outlive the caller
    out = call(dialplan, entry, Server(status="HANGUP", passes=True), Server(answers=True, done=True))
    assert out.agis == [(FIRST, entry)] and out.end == "gone"


def test_stale_failover_variables_on_the_channel_are_overwritten(dialplan: Dialplan) -> None:
    """CC_FAILOVER / CC_STATE already on the channel (inherited, or left by an inbound context) are set
    afresh before the first AGI, so they cannot send a call the first server handled elsewhere."""
    servers = {FIRST: Server(status="SUCCESS", answers=True), SECOND: Server(answers=True, done=True)}
    # Answered before it came here, a stale CC_STATE says otherwise: the real state wins.
    interp = Interpreter(dialplan, {"CALLCENTRE_AGI": FIRST, "CALLCENTRE_AGI2": SECOND}, servers, "Up",
                         {"CC_FAILOVER": "hotline", "CC_STATE": "Ring"})
    out = interp.run("callcentre-hotline", "s")
    assert out.agis == [(FIRST, "hotline")] and out.end == "queue" and interp.vars["CC_STATE"] == "Up"
    # No second server configured: a stale CC_FAILOVER (and CC_AGI2) is cleared, not obeyed.
    interp = Interpreter(dialplan, {"CALLCENTRE_AGI": FIRST}, {FIRST: Server(status="FAILURE")}, "Ring",
                         {"CC_FAILOVER": "survey", "CC_AGI2": SECOND, "CC_STATE": "Ring"})
    out = interp.run("callcentre-hotline", "s")
    assert out.agis == [(FIRST, "hotline")] and out.end == "queue"
