"""Automation control: what may stop, delay or quieten an automated rollback the rules decided.

Between the incident stage (above, which asks) and the store and rules
(below). ``pauses`` is the kill switch people set at run time; ``guard`` is
the one question the rollback driver asks before an automated rollback would
start ("may this run, and if not, which guard holds it and why?"); ``holds``
records every decision a guard held, which ``shadow report`` reads back.
"""
