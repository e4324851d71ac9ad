"""Two or more servers on one PostgreSQL: who runs the run-once parts, and live updates for every node.

* :mod:`callcentre.cluster.leader`: a leader election over a PostgreSQL session-level advisory lock
  (one dedicated connection per elector), with a fencing term; on SQLite a single node is always leader.
* :mod:`callcentre.cluster.notify`: the web :class:`~callcentre.web.hub.Hub` extended over
  PostgreSQL ``LISTEN``/``NOTIFY``, so a publish on one node reaches the websockets of every node.
* :mod:`callcentre.cluster.config`: their settings (a ``cluster:`` section for ``config.yaml``).

Both use raw asyncpg connections, not SQLAlchemy's pool: a session-level lock and a ``LISTEN`` belong
to one server session, and a pool hands sessions out, recycles and resets them.
"""
