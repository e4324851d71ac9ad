"""Table tests for the pure FastAGI protocol functions, against every reply form in the captures."""

from __future__ import annotations

import doctest

import pytest
from captures import read_capture
from hypothesis import given
from hypothesis import strategies as st

from callcentre.agi import protocol
from callcentre.agi.protocol import (
    AGIProtocolError,
    AGIReply,
    ReplyAssembler,
    build_command,
    parse_env,
    parse_reply,
    quote_arg,
    unquote_args,
)

AGI_CAPTURES = ["agi-ivr-commands.txt", "agi-dial-agents.txt", "agi-callback-survey.txt", "agi-sip-call.txt"]


def test_doctests() -> None:
    result = doctest.testmod(protocol)
    assert result.attempted >= 5 and result.failed == 0


def _header(name: str) -> list[bytes]:
    out = []
    for line in read_capture(name):
        if line.tag != "<<":
            continue
        if line.data == b"\n":
            break
        out.append(line.data)
    return out


def test_parse_env_from_capture() -> None:
    env = parse_env(_header("agi-ivr-commands.txt"))
    assert env.script == "capture"
    assert env.request == "agi://127.0.0.1:4573/capture"
    assert env.channel == "Local/8000@capture-agi-00000000;2"
    assert env.uniqueid == "1795351990.1"
    assert (env.callerid, env.calleridname) == ("13800138000", "Zhang San")
    assert (env.language, env.type, env.version) == ("en", "Local", "20.20.1")
    assert (env.context, env.extension, env.priority) == ("capture-agi", "8000", "2")
    assert env.args == ("arg one", "arg2")
    assert env.raw["agi_accountcode"] == ""
    assert env.raw["agi_threadid"] == "140185524098752"
    assert env.malformed_lines == 0 and env.decode_errors == 0


@pytest.mark.parametrize("name", AGI_CAPTURES)
def test_every_capture_header_parses(name: str) -> None:
    env = parse_env(_header(name))
    assert env.script and env.uniqueid and env.channel


def test_parse_env_args_in_numeric_order_and_tolerance() -> None:
    env = parse_env(
        [
            b"agi_network_script: hotline\n",
            b"agi_arg_10: ten\n",
            b"agi_arg_2: two\n",
            b"agi_arg_1: one\n",
            b"agi_arg_x: ignored\n",
            b"agi_future_key: whatever\n",
            b"this line has no separator\n",
            b"agi_calleridname: Li \xff\xfe Si\n",
        ]
    )
    assert env.args == ("one", "two", "ten")
    assert env.raw["agi_future_key"] == "whatever"
    assert env.malformed_lines == 1
    assert env.decode_errors == 1
    assert env.calleridname == "Li \ufffd\ufffd Si"
    assert env.uniqueid == ""  # missing keys are empty, not errors


def test_parse_env_value_may_contain_separator() -> None:
    env = parse_env(["agi_calleridname: a: b\n"])
    assert env.calleridname == "a: b"


REPLIES = [
    ("200 result=0", AGIReply(200, "0", None, None, "200 result=0")),
    ("200 result=1 (13800138000)", AGIReply(200, "1", "13800138000", None, "200 result=1 (13800138000)")),
    ("200 result= (timeout)", AGIReply(200, "", "timeout", None, "200 result= (timeout)")),
    ("200 result=12 (timeout)", AGIReply(200, "12", "timeout", None, "200 result=12 (timeout)")),
    ("200 result=-1 endpos=0", AGIReply(200, "-1", None, 0, "200 result=-1 endpos=0")),
    ("200 result=0 (timeout) endpos=0", AGIReply(200, "0", "timeout", 0, "200 result=0 (timeout) endpos=0")),
    ("200 result=0 endpos=3404", AGIReply(200, "0", None, 3404, "200 result=0 endpos=3404")),
    ("200 result=1 ()", AGIReply(200, "1", "", None, "200 result=1 ()")),
    ("200 result=-2", AGIReply(200, "-2", None, None, "200 result=-2")),
    ("200 result=35 (dtmf) endpos=8000", AGIReply(200, "35", "dtmf", 8000, "200 result=35 (dtmf) endpos=8000")),
    (
        "200 result=1 (Local/agent1@sim-agents-00000006;1)",
        AGIReply(200, "1", "Local/agent1@sim-agents-00000006;1", None, "200 result=1 (Local/agent1@sim-agents-00000006;1)"),
    ),
    ("200 result=1 (a) b (c)", AGIReply(200, "1", "a) b (c", None, "200 result=1 (a) b (c)")),
    (
        "511 Command Not Permitted on a dead channel or intercept routine",
        AGIReply(511, None, "Command Not Permitted on a dead channel or intercept routine", None,
                 "511 Command Not Permitted on a dead channel or intercept routine"),
    ),
    ("510 Invalid or unknown command", AGIReply(510, None, "Invalid or unknown command", None, "510 Invalid or unknown command")),
    (
        "520 Invalid command syntax.  Proper usage not available.",
        AGIReply(520, None, "Invalid command syntax.  Proper usage not available.", None,
                 "520 Invalid command syntax.  Proper usage not available."),
    ),
]


@pytest.mark.parametrize("line,expected", REPLIES, ids=[r[0] for r in REPLIES])
def test_parse_reply(line: str, expected: AGIReply) -> None:
    assert parse_reply(line) == expected
    assert parse_reply(line.encode() + b"\n") == expected


def test_result_int() -> None:
    assert parse_reply("200 result=-2").result_int == -2
    with pytest.raises(AGIProtocolError):
        _ = parse_reply("200 result= (timeout)").result_int


@pytest.mark.parametrize(
    "line", ["", "HANGUP", "hello", "200", "200 ok", "20 result=1", "200 result=1 (unclosed", "200 result=1 junk"]
)
def test_malformed_replies_raise(line: str) -> None:
    with pytest.raises(AGIProtocolError):
        parse_reply(line)


def test_every_reply_in_the_captures_parses() -> None:
    seen = 0
    for name in AGI_CAPTURES:
        in_header = True
        for line in read_capture(name):
            if line.tag != "<<":
                continue
            if in_header:
                in_header = line.data != b"\n"
                continue
            if line.data == b"HANGUP\n":
                continue
            reply = parse_reply(line.data)
            assert reply.raw == line.data.decode().rstrip("\n")
            seen += 1
    assert seen >= 40


def test_assembler_usage_block() -> None:
    asm = ReplyAssembler()
    assert asm.feed("520-Invalid command syntax.  Proper usage follows:") is None
    assert asm.in_block
    assert asm.feed(" Usage: GET DATA <file to be streamed> [timeout] [max digits]") is None
    assert asm.feed("HANGUP") is None  # inside the block it is usage text, not the unsolicited line
    reply = asm.feed("520 End of proper usage.")
    assert reply is not None and reply.code == 520
    assert "Usage: GET DATA" in (reply.data or "")
    assert not asm.in_block
    assert asm.feed("200 result=0") == parse_reply("200 result=0")


def test_assembler_value_with_newline() -> None:
    asm = ReplyAssembler()
    assert asm.feed("200 result=1 (first line") is None
    reply = asm.feed("second line)")
    assert reply is not None and reply.data == "first line\nsecond line"


def test_assembler_rejects_garbage_and_endless_blocks() -> None:
    with pytest.raises(AGIProtocolError):
        ReplyAssembler().feed("garbage")
    asm = ReplyAssembler()
    asm.feed("520-usage")
    with pytest.raises(AGIProtocolError):
        for _ in range(protocol.MAX_CONTINUATION_LINES + 2):
            asm.feed("more usage")


QUOTES = [
    ("beep", "beep"),
    ("", '""'),
    ("hello world", '"hello world"'),
    ("${CC_TEST}", "${CC_TEST}"),
    ("Local/agent1@sim-agents/n,10", "Local/agent1@sim-agents/n,10"),
    ('"; EXEC System rm', '"\\"; EXEC System rm"'),
    ("a\\b", '"a\\\\b"'),
    ("tab\there", '"tab\there"'),
    (42, "42"),
    ("张三", "张三"),
]


@pytest.mark.parametrize("value,quoted", QUOTES)
def test_quote_arg(value: object, quoted: str) -> None:
    assert quote_arg(value) == quoted
    assert unquote_args(quoted) == [str(value)]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "\n"])
def test_quote_arg_rejects_line_breaks(bad: str) -> None:
    with pytest.raises(ValueError):
        quote_arg(bad)
    with pytest.raises(ValueError):
        build_command("SET VARIABLE", "X", bad)


def test_quote_arg_types() -> None:
    with pytest.raises(TypeError):
        quote_arg(None)
    with pytest.raises(TypeError):
        quote_arg(True)


def test_build_command_matches_captures() -> None:
    assert build_command("SET VARIABLE", "CC_TEST", "hello world") == b'SET VARIABLE CC_TEST "hello world"\n'
    assert build_command("STREAM FILE", "welcome", "") == b'STREAM FILE welcome ""\n'
    assert build_command("EXEC", "Dial", "Local/agent1@sim-agents/n,10") == b"EXEC Dial Local/agent1@sim-agents/n,10\n"
    assert build_command("GET DATA", "beep", 4000, 1) == b"GET DATA beep 4000 1\n"
    assert build_command("ANSWER") == b"ANSWER\n"
    rec = build_command("RECORD FILE", "/var/spool/asterisk/monitor/rec-test", "wav", "#", 2000, 0, "BEEP", "s=1")
    assert rec == b"RECORD FILE /var/spool/asterisk/monitor/rec-test wav # 2000 0 BEEP s=1\n"


def test_every_command_in_the_captures_round_trips() -> None:
    """Split each captured command the way Asterisk does, rebuild it: same bytes."""
    verbs = ["GET FULL VARIABLE", "GET VARIABLE", "SET VARIABLE", "STREAM FILE", "GET DATA", "WAIT FOR DIGIT",
             "SAY DIGITS", "SAY NUMBER", "RECORD FILE", "SET MUSIC", "EXEC", "ANSWER"]
    count = 0
    for name in AGI_CAPTURES:
        for line in read_capture(name):
            if line.tag != ">>":
                continue
            text = line.data.decode().rstrip("\n")
            verb = next(v for v in verbs if text == v or text.startswith(v + " "))
            args = unquote_args(text[len(verb):])
            assert build_command(verb, *args) == line.data
            count += 1
    assert count >= 30


def test_build_command_limits() -> None:
    with pytest.raises(ValueError):
        build_command("set variable", "X", "1")
    with pytest.raises(ValueError):
        build_command("SET VARIABLE; EXEC", "X")
    with pytest.raises(ValueError):
        build_command("SET VARIABLE", "X", "y" * protocol.MAX_COMMAND_BYTES)
    with pytest.raises(ValueError):
        build_command("EXEC", *(["a"] * protocol.MAX_ARGS))


def test_hostile_values_arrive_as_one_literal_argument() -> None:
    for value in ['"; EXEC System rm -rf /', "${SHELL(rm -rf /)}", 'a" "b', "\\", '\\"', "x\\ y", " lead", "trail "]:
        line = build_command("SET VARIABLE", "CC_X", value).decode().rstrip("\n")
        assert unquote_args(line) == ["SET", "VARIABLE", "CC_X", value]


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=60))
def test_quoting_round_trips(value: str) -> None:
    line = build_command("SET VARIABLE", "CC_X", value).decode("utf-8").rstrip("\n")
    assert unquote_args(line) == ["SET", "VARIABLE", "CC_X", value]


# The header exactly as Asterisk 20.20.1 sent it for CALLERID(name) set with BASE64_DECODE (raw bytes
# seen on the real PBX, tests/pbx/test_pbx_agi.py): values go out unescaped, CR/LF included.
def _asterisk_header(name: bytes, number: bytes = b"13800138000", args: tuple[bytes, ...] = ()) -> bytes:
    return (b"agi_network: yes\nagi_network_script: hotline\nagi_request: agi://127.0.0.1:52713/hotline\n"
            b"agi_channel: Local/crlf@cc-test-hostile-00000000;2\nagi_language: en\nagi_type: Local\n"
            b"agi_uniqueid: 1796227089.1\nagi_version: 20.20.1\nagi_callerid: " + number + b"\n"
            b"agi_calleridname: " + name + b"\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\n"
            b"agi_callingtns: 0\nagi_dnid: unknown\nagi_rdnis: unknown\nagi_context: callcentre-hotline\n"
            b"agi_extension: s\nagi_priority: 6\nagi_enhanced: 0.0\nagi_accountcode: \n"
            b"agi_threadid: 140113804220096\n"
            + b"".join(b"agi_arg_%d: %s\n" % (i, a) for i, a in enumerate(args, 1)) + b"\n")


def _feed_until_end(data: bytes) -> tuple[protocol.AGIEnv, bytes]:
    """Feed lines as the server reads them; return the env and what was left after the header's end."""
    asm = protocol.EnvAssembler()
    rest = data
    while rest:
        line, _, rest = rest.partition(b"\n")
        if asm.feed(line + b"\n"):
            return asm.env(), rest
    raise AssertionError("the header never ended")


@pytest.mark.parametrize("name,shown", [
    (b"x\r\ny", "x\\r\\ny"),
    (b"a\n\nagi_network_script: evil\n\nb", "a\\n\\nagi_network_script: evil\\n\\nb"),
    (b"t\tu\x01v\x7fw\"q'\\;|", "t\\tu\\x01v\\x7fw\"q'\\;|"),
    (b"x\nagi_threadid: 1\n\nagi_arg_1: evil", "x\\nagi_threadid: 1\\n\\nagi_arg_1: evil"),
    (b"x\r", "x\\r"),
    (b"Zhang San", "Zhang San"),
])
def test_caller_name_with_line_breaks_stays_one_field(name: bytes, shown: str) -> None:
    env, rest = _feed_until_end(_asterisk_header(name, args=(b"T-1",)))
    assert rest == b""  # the header ended at Asterisk's own blank line, not at one inside the name
    assert env.calleridname == shown
    assert env.raw["agi_calleridname"] == name.decode()
    assert env.script == "hotline" and env.args == ("T-1",) and env.uniqueid == "1796227089.1"
    assert env.raw["agi_callingpres"] == "0" and env.raw["agi_threadid"] == "140113804220096"
    assert env.control_fields == (("agi_calleridname",) if shown != name.decode() else ())


def test_caller_number_with_line_breaks_and_substitution_text() -> None:
    env, rest = _feed_until_end(_asterisk_header(b"n", number=b"13800138000${SHELL(id)}\r\nx"))
    assert rest == b""
    assert env.callerid == "13800138000${SHELL(id)}\\r\\nx" and env.calleridname == "n"
    # A value holding the very next field's line cannot be told apart from it: the number then ends
    # there, but what follows stays within the caller's own fields and the header still ends right.
    env, rest = _feed_until_end(_asterisk_header(b"n", number=b"138\nagi_calleridname: forged"))
    assert rest == b"" and env.callerid == "138" and env.calleridname == "forged\\nagi_calleridname: n"
    assert env.raw["agi_callingpres"] == "0" and env.script == "hotline"


def test_header_not_in_asterisk_order_is_read_leniently() -> None:
    # A peer that sends fewer fields (test tools): a blank line ends it; odd lines are counted.
    data = b"agi_network: yes\nagi_network_script: hotline\nagi_calleridname: x\r\ny\n\nagi_arg_1: late\n"
    env, rest = _feed_until_end(data)
    assert rest == b"agi_arg_1: late\n"
    assert env.calleridname == "x" and env.malformed_lines == 1 and env.args == ()


def test_bare_argument_rule_is_the_same_for_every_code_point() -> None:
    """quote_arg sends a token bare by one regex; it must agree with the rule it replaced (no white
    space as str.isspace sees it, no quote or backslash, no control character) on every character."""
    from callcentre.agi.protocol import _BARE

    for code in range(0x110000):
        c = chr(code)
        plain = not (c.isspace() or c in '"\\' or code < 0x20 or code == 0x7F)
        assert bool(_BARE.fullmatch(c)) == plain, hex(code)
