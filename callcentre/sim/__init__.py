"""A protocol-faithful Asterisk simulator (AMI server + FastAGI client + scripted callers/agents).

Our tests cannot start an Asterisk, so the server's FastAGI listener and AMI client talk to this
over real sockets; every line it writes follows the real Asterisk 20 captures in tests/fixtures/.
"""

from callcentre.sim.ami_server import AMIServer
from callcentre.sim.pbx import Callee, DialplanEntry, SimPBX
from callcentre.sim.scripts import AgentScript, CallEnd, CallerScript, CallResult, Hangup, Record, Silence

__all__ = [
    "AMIServer", "AgentScript", "CallEnd", "CallResult", "Callee", "CallerScript", "DialplanEntry",
    "Hangup", "Record", "SimPBX", "Silence",
]
