"""Call distribution, the adapter around the pure :mod:`callcentre.domain.acd`.

* :mod:`.service` — :class:`ACDService`: the IVR's agent connector, the AMI call tracker's listener and
  the web layer's ``ACDControl``; it composes the pieces below.
* :mod:`callcentre.domain.waiting` — the caller-facing wait script (music, announcements, call-back
  key, the Dial to two rings), pure domain over the Channel port.
* :mod:`.legs` — AMI leg correlation: offer <-> caller uniqueid <-> agent leg, and agents busy on
  calls we did not route, in explicit states.
* :mod:`.queue_callback` — :class:`QueueCallback`: the caller who pressed the call-back key while
  waiting (ticket, Originate to the agent, the ``callback`` script dialling the owner).
* :mod:`.agents` — :class:`AgentRoster`: agents loaded from (and kept in step with) the users table.
* :mod:`.transfers` — :class:`~.transfers.Transfers`: blind and attended transfers (docs/transfers.md).
* :mod:`callcentre.domain.wallboard` — the typed wallboard snapshot.
"""

from callcentre.distribution.agents import AgentRoster, agent_from_user
from callcentre.distribution.queue_callback import QueueCallback
from callcentre.distribution.service import ACDService

__all__ = ["ACDService", "AgentRoster", "QueueCallback", "agent_from_user"]
