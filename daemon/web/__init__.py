"""The incident pages for responders: server-rendered HTML under ``/incidents``, beside the API.

Part of the api layer (``api : web`` in ``.importlinter``): ``api.app`` mounts
``routes.router``, and the pages read the same ``ApiState`` and call the same
``IncidentService`` as the JSON API, so an acknowledgement, approval or
rejection made here takes the API's path (lockout, secrecy, outbox to Slack
and PagerDuty). Who the user is comes from ``identity`` (a server-side session
from ``sessions``, or an authenticating proxy's header); ``render`` turns the
typed records into pages with Jinja2's autoescape and a strict CSP.
"""
