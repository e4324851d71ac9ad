"""The application's services: the pure rules of :mod:`callcentre.domain.lifecycle`,
:mod:`~callcentre.domain.promises`, :mod:`~callcentre.domain.service` and
:mod:`~callcentre.domain.reports` tied to the database, AMI, FastAGI and HTTP.

* :mod:`.tickets`     load / transition / persist tickets with their history; dispatch; repeats
* :mod:`.escalation`  the promise evaluator loop (80 % warning, escalation at breach, live alerts)
* :mod:`.webhooks`    signed outbound webhooks from a persisted outbox, retried with backoff
* :mod:`.callbacks`   the closing call-back: Originate, OriginateResponse, retries, flag for a person
* :mod:`.survey`      the FastAGI ``survey`` script the call-back lands in
* :mod:`.reports`     ReportService: the daily reconciliation and monthly statistics (CLI and page)
* :mod:`.reports_cmd` the report commands' files and the daily reconciliation scheduler
* :mod:`.alerts`      WallboardNotifier: live messages, service events as wallboard alerts
* :mod:`.ami_events`  the AMI link's events fanned out in order; the resync on every login
* :mod:`.desk`        what the web layer calls, one service per API feature (accounts, agents, owners, tickets)
"""
