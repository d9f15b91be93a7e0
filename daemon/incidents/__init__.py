"""Incidents: the persisted state machine, approvals, acknowledgements, timers and decision records.

Between ``rules`` (which decide) and ``actions`` (which roll back): a decision
opens or joins an incident here, people approve, reject or acknowledge it,
timers drive deadlines, and ``IncidentService`` asks the executor to act.
"""
