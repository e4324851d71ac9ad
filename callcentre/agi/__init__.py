"""FastAGI adapter: a hardened server, the wire protocol, and the Channel implementation.

``protocol`` is pure (parsers and quoting), ``server`` accepts Asterisk's connections and routes
them by script name, ``channel`` turns one connection into the domain's ``Channel``.
"""

from callcentre.agi.channel import AGIChannel
from callcentre.agi.protocol import AGIEnv, AGIProtocolError, AGIReply, build_command, parse_env, parse_reply, quote_arg
from callcentre.agi.server import FastAGIServer, Handler, Router

__all__ = [
    "AGIChannel",
    "AGIEnv",
    "AGIProtocolError",
    "AGIReply",
    "FastAGIServer",
    "Handler",
    "Router",
    "build_command",
    "parse_env",
    "parse_reply",
    "quote_arg",
]
