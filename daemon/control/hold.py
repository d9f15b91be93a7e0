"""What a guard answers when it holds an automated rollback: its name and the sentence people read.

Part of automation control; plain values, no I/O, so the incident state
machine (``incidents.machine``) can tell a shadow hold from the others.
"""

from __future__ import annotations

from dataclasses import dataclass

SHADOW = "shadow"  # a shadow rule (or namespace): decided and dry-run, never written
PAUSE = "pause"  # a pause in force (``rollbackd pause``)
FREEZE = "freeze"  # a freeze window of the rule files that blocks now
ONE_ATTEMPT = "one_attempt"  # this bad revision was already rolled back automatically


@dataclass(frozen=True, slots=True)
class Hold:
    """Why an automated rollback does not run: the guard's name and a sentence for people."""

    guard: str
    detail: str

# How the executor's refusal by the one-attempt guard begins (``actions.attempts``); the driver reads it back.
ONE_ATTEMPT_REFUSAL = "one automated attempt per bad revision"
