"""Which engine generates a request: model names, the ``auto`` rule, health and load.

``catalog`` turns a request's ``model`` into a :class:`~appliance.routing.catalog.Route`
(``default`` and ``auto`` resolved); ``auto`` is the small/large rule; ``router`` picks the
engine of a route (least outstanding among the healthy ones) and hears how each request
went; ``health`` ejects an engine after consecutive failures and re-admits it after a
back-off. Plain Python, no I/O: the probes that feed ``health`` live in
:mod:`appliance.upstream`.
"""
