"""The service loop's adapters (issue 5): the pure rules of :mod:`callcentre.domain.lifecycle`,
:mod:`~callcentre.domain.promises`, :mod:`~callcentre.domain.service` and
:mod:`~callcentre.domain.reports` tied to the database, AMI, FastAGI and HTTP.

* :mod:`.tickets`     load / transition / persist tickets with their history; dispatch; repeats
* :mod:`.escalation`  the promise evaluator loop (80 % warning, escalation at breach, live alerts)
* :mod:`.webhooks`    signed outbound webhooks from a persisted outbox, retried with backoff
* :mod:`.callbacks`   the closing call-back: Originate, OriginateResponse, retries, flag for a person
* :mod:`.survey`      the FastAGI ``survey`` script the call-back lands in
* :mod:`.reports_cmd` daily reconciliation and monthly statistics for the CLI and the scheduler
"""
