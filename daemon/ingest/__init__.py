"""Ingest: dedupe, the durable inbox, per-key dispatch and the deployment history.

Sources hand parsed values to ``Inbox``; ``Dispatcher`` feeds them to the
rules stage through the ``Handler`` protocol, claiming rows through
``InboxClaims``; ``DeployHistoryStore`` answers
the rules' correlation questions.
"""

from daemon.ingest.claims import InboxClaims
from daemon.ingest.dispatcher import Dispatcher, Handler
from daemon.ingest.history import DeployHistoryStore
from daemon.ingest.inbox import AcceptResult, Inbox, InboxItem

__all__ = ["AcceptResult", "DeployHistoryStore", "Dispatcher", "Handler", "Inbox", "InboxClaims", "InboxItem"]
