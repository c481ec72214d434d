"""The read side's SQL: one query object per concept (sessions, traces, dashboards, evaluation, metrics, dead
letters), each a small class over an ``AsyncSession`` and the ``Tables`` that answers the typed interface its
application module declares. They build the statements and return rows (dicts, tuples); what to do with the rows
(paging, composing answers, statistics, blind-review filtering) is the application's."""
