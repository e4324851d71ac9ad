"""AMI adapter: the link to Asterisk's manager interface and the call tracker fed by its events."""

from callcentre.ami.calls import CallListener, CallRecord, CallState, CallTracker, DialAttempt
from callcentre.ami.link import (
    AMIActionError,
    AMIDisconnected,
    AMIError,
    AMILink,
    AMILoginFailed,
    AMITimeout,
    LinkState,
)
from callcentre.ami.protocol import AMIValueRejected, sanitise_action

__all__ = [
    "AMIActionError",
    "AMIDisconnected",
    "AMIError",
    "AMILink",
    "AMILoginFailed",
    "AMITimeout",
    "AMIValueRejected",
    "CallListener",
    "CallRecord",
    "CallState",
    "CallTracker",
    "DialAttempt",
    "LinkState",
    "sanitise_action",
]
