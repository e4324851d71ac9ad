"""A simulated Asterisk Manager Interface server speaking the exact wire format of the captures
(tests/fixtures/ami-*.txt), with fault controls (restart, dropped clients, half-open link)."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import structlog

from callcentre.sim.pbx import (
    Fields,
    OriginateReason,
    SimChannel,
    SimPBX,
    parse_callerid,
    snapshot,
)

log = structlog.get_logger(__name__)

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
MAX_MESSAGE_BYTES = 64 * 1024


class ServerState(enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    RESTARTING = "restarting"


def encode(fields: Fields) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8") + b"\r\n"


def _tv(ts: float) -> str:
    d = datetime.fromtimestamp(ts, timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


@dataclass(eq=False)
class AMIClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    authenticated: bool = False
    session_id: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass(frozen=True)
class ReceivedAction:
    """One action as the server read it (header order kept; repeated headers kept)."""

    name: str
    headers: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.headers:
            if k.lower() == key.lower():
                return v
        return default


class AMIServer:
    """Listens on 127.0.0.1; every logged-in client receives every PBX event."""

    def __init__(self, pbx: SimPBX, username: str = "callcentre", secret: str = "secret",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.pbx = pbx
        self.username = username
        self.secret = secret
        self.host = host
        self.port = port
        self.state = ServerState.STOPPED
        self.actions: list[ReceivedAction] = []
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[AMIClient] = set()
        self._half_open = False
        self._unsubscribe = None
        self._restart_task: asyncio.Task[None] | None = None
        self._session_seq = 0x7F7F70000EE0

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        """Start listening; returns the real port (useful with port 0)."""
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self._unsubscribe is None:
            self._unsubscribe = self.pbx.subscribe(self._broadcast)
        self.state = ServerState.RUNNING
        return self.port

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        if self._restart_task is not None:
            self._restart_task.cancel()
            await asyncio.gather(self._restart_task, return_exceptions=True)
            self._restart_task = None
        await self._close_listener()
        await self._close_clients()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.state = ServerState.STOPPED

    async def _close_clients(self) -> None:
        clients = list(self._clients)
        self._clients.clear()
        for c in clients:
            c.writer.close()
        # Closing the transport ends each handler's read loop; cancelling a start_server handler
        # task would make asyncio log the CancelledError, so it is only the last resort.
        tasks = [t for c in clients for t in c.tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------ fault controls
    async def restart(self, down_seconds: float = 0.5) -> None:
        """``core restart now``: Shutdown event, every client closed, connections refused for
        ``down_seconds``, then a fresh Asterisk (Uptime 0, no channels). Returns once refusing;
        the listener comes back in the background (await :meth:`wait_running`)."""
        self._send_all([("Event", "Shutdown"), ("Privilege", "system,all"), ("Shutdown", "Cleanly"),
                        ("Restart", "True")])
        for c in list(self._clients):
            try:
                await c.writer.drain()
            except (ConnectionError, OSError):
                pass
        self.state = ServerState.RESTARTING
        await self._close_listener()
        await self._close_clients()
        self.pbx.reset()
        self._restart_task = asyncio.ensure_future(self._come_back(down_seconds))

    async def _come_back(self, down_seconds: float) -> None:
        await asyncio.sleep(down_seconds)
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.state = ServerState.RUNNING

    async def wait_running(self) -> None:
        if self._restart_task is not None:
            await self._restart_task
            self._restart_task = None

    async def drop_clients(self) -> None:
        """Reset every client connection (as if the network dropped them)."""
        for c in list(self._clients):
            transport = c.writer.transport
            if hasattr(transport, "abort"):
                transport.abort()
        await self._close_clients()

    def half_open(self, on: bool) -> None:
        """Stop sending anything (replies, events, Pong) while keeping sockets open."""
        self._half_open = on

    def reset_actions(self) -> None:
        self.actions.clear()

    def actions_named(self, name: str) -> list[ReceivedAction]:
        return [a for a in self.actions if a.name.lower() == name.lower()]

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # ------------------------------------------------------------ output
    def _write(self, client: AMIClient, data: bytes) -> None:
        if self._half_open or client.writer.is_closing():
            return
        client.writer.write(data)

    def _send(self, client: AMIClient, fields: Fields) -> None:
        self._write(client, encode(fields))

    def _send_all(self, fields: Fields) -> None:
        data = encode(fields)
        for c in list(self._clients):
            if c.authenticated:
                self._write(c, data)

    def _broadcast(self, fields: Fields) -> None:
        self._send_all(fields)

    async def send_raw(self, data: bytes) -> int:
        """Write ``data`` as it is (recorded AMI bytes, for a replay) to every logged-in client and wait
        until each has taken it (``drain``); returns how many clients it went to."""
        clients = [c for c in self._clients if c.authenticated and not c.writer.is_closing()]
        for c in clients:
            self._write(c, data)
        for c in clients:
            try:
                await c.writer.drain()
            except ConnectionError:
                pass
        return len(clients)

    @staticmethod
    def _response(action: ReceivedAction, status: str, extra: Fields) -> Fields:
        out: Fields = [("Response", status)]
        aid = action.get("ActionID")
        if aid is not None:
            out.append(("ActionID", aid))
        return out + extra

    # ------------------------------------------------------------ input
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = AMIClient(reader, writer)
        self._session_seq += 0x10F0
        client.session_id = f"0x{self._session_seq:x}"
        self._clients.add(client)
        task = asyncio.current_task()
        if task is not None:
            client.tasks.append(task)  # type: ignore[arg-type]
        try:
            self._write(client, BANNER)
            while True:
                action = await self._read_action(reader)
                if action is None:
                    break
                self.actions.append(action)
                if not await self._dispatch(client, action):
                    break
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._clients.discard(client)
            if task is not None and task in client.tasks:
                client.tasks.remove(task)  # type: ignore[arg-type]
            writer.close()

    async def _read_action(self, reader: asyncio.StreamReader) -> ReceivedAction | None:
        headers: list[tuple[str, str]] = []
        size = 0
        while True:
            raw = await reader.readline()
            if not raw:
                return None
            size += len(raw)
            if size > MAX_MESSAGE_BYTES:
                raise ValueError("AMI message too large")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if headers:
                    break
                continue
            key, sep, value = line.partition(":")
            if sep:
                headers.append((key.strip(), value.lstrip(" ")))
        name = next((v for k, v in headers if k.lower() == "action"), "")
        return ReceivedAction(name, tuple(headers))

    async def _dispatch(self, client: AMIClient, action: ReceivedAction) -> bool:
        """Answer one action; False closes the connection."""
        name = action.name.lower()
        if name == "login":
            return self._login(client, action)
        if name == "logoff":
            self._send(client, self._response(action, "Goodbye", [("Message", "Thanks for all the fish.")]))
            return False
        if not client.authenticated:
            self._send(client, self._response(action, "Error", [("Message", "Permission denied")]))
            return True
        handler = getattr(self, f"_act_{name}", None)
        if handler is None:
            self._send(client, self._response(action, "Error", [(
                "Message",
                f"Invalid/unknown command: {action.name}. Use Action: ListCommands to show available commands.",
            )]))
            return True
        await handler(client, action)
        return True

    def _login(self, client: AMIClient, action: ReceivedAction) -> bool:
        if action.get("Username") != self.username or action.get("Secret") != self.secret:
            self._send(client, self._response(action, "Error", [("Message", "Authentication failed")]))
            return False
        client.authenticated = True
        self._send(client, self._response(action, "Success", [("Message", "Authentication accepted")]))
        up = str(self.pbx.uptime())
        self._send(client, [("Event", "FullyBooted"), ("Privilege", "system,all"), ("Uptime", up),
                            ("LastReload", up), ("Status", "Fully Booted")])
        now = _tv(time.time())
        local = client.writer.get_extra_info("sockname") or ("127.0.0.1", self.port)
        remote = client.writer.get_extra_info("peername") or ("127.0.0.1", 0)
        self._send(client, [
            ("Event", "SuccessfulAuth"), ("Privilege", "security,all"), ("EventTV", now),
            ("Severity", "Informational"), ("Service", "AMI"), ("EventVersion", "1"),
            ("AccountID", self.username), ("SessionID", client.session_id),
            ("LocalAddress", f"IPV4/TCP/{local[0]}/{local[1]}"),
            ("RemoteAddress", f"IPV4/TCP/{remote[0]}/{remote[1]}"), ("UsingPassword", "0"),
            ("SessionTV", now),
        ])
        return True

    # ------------------------------------------------------------ actions
    async def _act_ping(self, client: AMIClient, action: ReceivedAction) -> None:
        self._send(client, self._response(action, "Success", [("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]))

    async def _act_originate(self, client: AMIClient, action: ReceivedAction) -> None:
        if not action.get("Channel"):
            self._send(client, self._response(action, "Error", [("Message", "Channel not specified")]))
            return
        fields = {k: v for k, v in action.headers if k.lower() != "variable"}
        norm = {k.title() if k.lower() != "callerid" else "CallerID": v for k, v in fields.items()}
        norm["Channel"] = action.get("Channel") or ""
        variables: list[tuple[str, str]] = []
        for k, v in action.headers:
            if k.lower() == "variable":
                for item in v.split(","):
                    key, _, val = item.partition("=")
                    if key:
                        variables.append((key.strip(), val))
        is_async = (action.get("Async") or "").lower() in ("true", "yes", "1", "on")
        if is_async:
            self._send(client, self._response(action, "Success", [("Message", "Originate successfully queued")]))
            await client.writer.drain()
            self.pbx.spawn(self._originate_async(action, norm, variables), name="ami-originate")
            return
        reason, _ = await self.pbx.originate(norm, variables)
        if reason == OriginateReason.ANSWERED:
            self._send(client, self._response(action, "Success", [("Message", "Originate successfully queued")]))
        else:
            self._send(client, self._response(action, "Error", [("Message", "Originate failed")]))

    async def _originate_async(self, action: ReceivedAction, fields: dict[str, str],
                               variables: list[tuple[str, str]]) -> None:
        reason, ch = await self.pbx.originate(fields, variables)
        cid_num, cid_name = parse_callerid(fields["CallerID"]) if fields.get("CallerID") else ("<unknown>", "<unknown>")
        out: Fields = [("Event", "OriginateResponse"), ("Privilege", "call,all")]
        if action.get("ActionID") is not None:
            out.append(("ActionID", action.get("ActionID") or ""))
        out += [
            ("Response", "Success" if reason == OriginateReason.ANSWERED else "Failure"),
            ("Channel", ch.name if ch else fields["Channel"]),
            ("Context", fields.get("Context", "")), ("Exten", fields.get("Exten", "")),
            ("Reason", str(int(reason))), ("Uniqueid", ch.uniqueid if ch else "<unknown>"),
            ("CallerIDNum", ch.caller_num if ch else cid_num),
            ("CallerIDName", ch.caller_name if ch else cid_name),
        ]
        self._send_all(out)

    def _channel_or_error(self, client: AMIClient, action: ReceivedAction) -> SimChannel | None:
        name = action.get("Channel")
        if not name:
            self._send(client, self._response(action, "Error", [("Message", "No channel specified")]))
            return None
        ch = self.pbx.find_channel(name)
        if ch is None:
            self._send(client, self._response(action, "Error", [("Message", "No such channel")]))
        return ch

    async def _act_hangup(self, client: AMIClient, action: ReceivedAction) -> None:
        ch = self._channel_or_error(client, action)
        if ch is None:
            return
        # Asterisk hangs up with cause 0 when the action names none (ami-ami-hangup-ringing-leg.txt)
        raw = (action.get("Cause") or "0").strip()
        cause = int(raw) if raw.isdigit() else 0
        self.pbx.manager_hangup(ch, cause)
        self._send(client, self._response(action, "Success", [("Message", "Channel Hungup")]))

    async def _act_redirect(self, client: AMIClient, action: ReceivedAction) -> None:
        ch = self._channel_or_error(client, action)
        if ch is None:
            return
        ch.context = action.get("Context") or ch.context
        ch.exten = action.get("Exten") or ch.exten
        ch.priority = int(action.get("Priority") or 1)
        self.pbx.request_hangup(ch, 16)
        self._send(client, self._response(action, "Success", [("Message", "Redirect successful")]))

    async def _act_getvar(self, client: AMIClient, action: ReceivedAction) -> None:
        var = action.get("Variable")
        if not var:
            self._send(client, self._response(action, "Error", [("Message", "No variable specified")]))
            return
        value = ""
        if action.get("Channel"):
            ch = self._channel_or_error(client, action)
            if ch is None:
                return
            value = ch.variables.get(var, "")
        self._send(client, self._response(action, "Success", [("Variable", var), ("Value", value)]))

    async def _act_setvar(self, client: AMIClient, action: ReceivedAction) -> None:
        var = action.get("Variable")
        if not var:
            self._send(client, self._response(action, "Error", [("Message", "No variable specified")]))
            return
        ch = self._channel_or_error(client, action)
        if ch is None:
            return
        self.pbx.set_var(ch, var, action.get("Value") or "")
        self._send(client, self._response(action, "Success", [("Message", "Variable Set")]))

    def _list(self, client: AMIClient, action: ReceivedAction, message: str, items: list[Fields],
              complete: str, extra: Fields | None = None) -> None:
        self._send(client, self._response(action, "Success", [("EventList", "start"), ("Message", message)]))
        for item in items:
            self._send(client, item)
        aid = action.get("ActionID")
        end: Fields = [("Event", complete)] + ([("ActionID", aid)] if aid is not None else [])
        end += [("EventList", "Complete"), ("ListItems", str(len(items)))] + (extra or [])
        self._send(client, end)

    def _aid(self, action: ReceivedAction) -> Fields:
        aid = action.get("ActionID")
        return [("ActionID", aid)] if aid is not None else []

    async def _act_coreshowchannels(self, client: AMIClient, action: ReceivedAction) -> None:
        now = time.monotonic()
        items = []
        for ch in list(self.pbx.channels.values()):
            secs = int(now - ch.created)
            items.append([("Event", "CoreShowChannel"), *self._aid(action), *snapshot(ch),
                          ("Application", ch.application), ("ApplicationData", ch.app_data),
                          ("Duration", f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"),
                          ("BridgeId", ch.bridge_id)])
        self._list(client, action, "Channels will follow", items, "CoreShowChannelsComplete")

    async def _act_status(self, client: AMIClient, action: ReceivedAction) -> None:
        now = time.monotonic()
        chans = list(self.pbx.channels.values())
        if action.get("Channel"):
            chans = [c for c in chans if c.name == action.get("Channel")]
        items = []
        for ch in chans:
            items.append([("Event", "Status"), ("Privilege", "Call"), *snapshot(ch), ("Type", ch.tech),
                          ("DNID", ch.dnid), ("EffectiveConnectedLineNum", ch.connected_num),
                          ("EffectiveConnectedLineName", ch.connected_name), ("TimeToHangup", "0"),
                          ("BridgeID", ch.bridge_id), ("Application", ch.application), ("Data", ch.app_data),
                          ("Nativeformats", "(slin)"), ("Readformat", "slin"), ("Readtrans", ""),
                          ("Writeformat", "slin"), ("Writetrans", ""), ("Callgroup", "0"), ("Pickupgroup", "0"),
                          ("Seconds", str(int(now - ch.created))), *self._aid(action)])
        self._list(client, action, "Channel status will follow", items, "StatusComplete",
                   [("Items", str(len(items)))])

    async def _act_bridgelist(self, client: AMIClient, action: ReceivedAction) -> None:
        items = [[("Event", "BridgeListItem"), *self._aid(action), *b.fields()] for b in self.pbx.bridges.values()]
        self._list(client, action, "Bridge listing will follow", items, "BridgeListComplete")

    async def _act_queuestatus(self, client: AMIClient, action: ReceivedAction) -> None:
        wanted = action.get("Queue")
        now = time.monotonic()
        items: list[Fields] = []
        for name, entries in self.pbx.queues.items():
            if wanted and wanted != name:
                continue
            items.append([("Event", "QueueParams"), ("Queue", name), ("Max", "0"), ("Strategy", "ringall"),
                          ("Calls", str(len(entries))), ("Holdtime", "0"), ("TalkTime", "0"),
                          ("Completed", "0"), ("Abandoned", "0"), ("ServiceLevel", "0"),
                          ("ServicelevelPerf", "0.0"), ("ServicelevelPerf2", "0.0"), ("Weight", "0"),
                          *self._aid(action)])
            for pos, e in enumerate(entries, 1):
                ch = e.channel
                items.append([("Event", "QueueEntry"), ("Queue", name), ("Position", str(pos)),
                              ("Channel", ch.name), ("Uniqueid", ch.uniqueid), ("CallerIDNum", ch.caller_num),
                              ("CallerIDName", ch.caller_name), ("ConnectedLineNum", ch.connected_num),
                              ("ConnectedLineName", ch.connected_name), ("Wait", str(int(now - e.joined))),
                              ("Priority", "0"), *self._aid(action)])
        self._list(client, action, "Queue status will follow", items, "QueueStatusComplete")
