"""Settings of the cluster parts, shaped to become the ``cluster:`` section of ``config.yaml``.

The timing rule that keeps two leaders from ever acting at once (see :mod:`callcentre.cluster.leader`):
a leader whose heartbeat goes unanswered steps down at most ``heartbeat_seconds +
heartbeat_timeout_seconds`` after the last answer it got, and the server frees the lock no sooner than
``lease_seconds`` after the last message it received from that leader. So ``lease_seconds`` must be
larger than ``heartbeat_seconds + 2 * heartbeat_timeout_seconds`` (the second timeout covers the round
trip of the last answered heartbeat), with a margin.
"""

from __future__ import annotations

import re
import socket

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; keep a margin for the envelope.
NOTIFY_PAYLOAD_LIMIT = 8000


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # This node's name in logs, pg_stat_activity and the leader row; default: the host name.
    node_name: str = ""
    # A follower tries to take the lock this often: the take-over time after a crash is at most this
    # (plus one connection set-up) once PostgreSQL has noticed the dead session.
    retry_seconds: float = Field(2.0, gt=0, le=30)
    # The leader checks it still holds the lock this often, and gives up the lead when an answer takes
    # longer than heartbeat_timeout_seconds.
    heartbeat_seconds: float = Field(1.0, gt=0, le=30)
    heartbeat_timeout_seconds: float = Field(1.0, gt=0, le=30)
    # Server-side lease: the lock session is ended by PostgreSQL (idle_session_timeout, 14+) when it has
    # heard nothing from the node for this long (a partition, a frozen VM, a pulled cable).
    lease_seconds: float = Field(6.0, gt=0, le=300)
    # Live updates: the NOTIFY channel, the largest message sent inline (larger ones go through a
    # table and the notification carries their id), and how long such rows are kept.
    notify_channel: str = "callcentre_hub"
    notify_inline_max_bytes: int = Field(7900, ge=256, lt=NOTIFY_PAYLOAD_LIMIT)
    notify_blob_retention_seconds: float = Field(120.0, ge=10, le=3600)
    # Messages waiting for a (re)connection to PostgreSQL; older ones are dropped, not sent late.
    notify_queue_max: int = Field(2000, ge=10)
    notify_stale_seconds: float = Field(10.0, gt=0, le=300)
    # A follower that gets a caller who asks for a person tries the lock at once and waits this long
    # for its own call distribution to start (the leader may be gone: the dialplan sent the call here
    # because the first server failed); then the dialplan's fallback queue takes the caller.
    promote_wait_seconds: float = Field(4.0, ge=0, le=30)
    # An agent's state change or a supervisor's listen-in made on a follower is carried out by the
    # leader (callcentre/cluster/relay.py); without its answer within this long the request fails (503).
    relay_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # A follower's wallboard shows the leader's latest snapshot while it is younger than this.
    remote_snapshot_max_age_seconds: float = Field(10.0, gt=0, le=300)

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, v: str) -> str:
        if v and not _NAME.fullmatch(v):
            raise ValueError("letters, digits and _ . : - only, 1 to 40 characters")
        return v

    @field_validator("notify_channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        # It is written into LISTEN as an identifier: keep it a plain lower-case name.
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", v):
            raise ValueError("a lower-case SQL identifier (a-z, 0-9, _), at most 63 characters")
        return v

    @model_validator(mode="after")
    def _timing(self) -> "ClusterConfig":
        need = self.heartbeat_seconds + 2 * self.heartbeat_timeout_seconds
        if self.lease_seconds <= need + 1.0:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must exceed heartbeat_seconds + 2 * heartbeat_timeout_seconds "
                f"+ 1 s margin ({need + 1.0}): a leader cut off from the database must step down before the "
                "database frees its lock")
        return self

    def node(self) -> str:
        """The configured node name, else the host name (cut to a valid name)."""
        if self.node_name:
            return self.node_name
        host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:40]
        return host or "node"
