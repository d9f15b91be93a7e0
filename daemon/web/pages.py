"""The pages: ``/`` → ``/incidents``, the incident list, one incident's page, the rules page, static files.

Read-only; each reads through the same services as the JSON API
(``IncidentService.list``/``get``, the ``RuleRegistry``) and renders with
``render.page``. None is in the OpenAPI document: they are for people.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from daemon.api.state import ApiState, state_of
from daemon.control.pauses import Pause, Pauses
from daemon.deploys import DeployEvent, DeployKind
from daemon.incidents.errors import IncidentNotFoundError
from daemon.incidents.record import IncidentRecord
from daemon.incidents.state import State
from daemon.ingest.history import DeployHistoryStore
from daemon.metrics import INPUT_REJECTED
from daemon.model import Severity
from daemon.web import render, views
from daemon.web.access import finish, user_or_signin
from daemon.web.deliveries import deliveries
from daemon.web.identity import User

router = APIRouter(include_in_schema=False)

LIST_LIMIT = 500
# How far back the page looks for the deploy that ran before the blamed one ("image before → after").
PREVIOUS_DEPLOY_WINDOW = timedelta(days=30)
_STATIC = {"rollbackd.js": "text/javascript", "rollbackd.css": "text/css"}
# What ``?done=`` may say after a form: fixed words, never text from the request.
DONE = {
    "ack": "Acknowledged. Slack and PagerDuty follow.",
    "approve": "Approval recorded.",
    "reject": "Rejected: the rollback will not run.",
}


@router.get("/")
async def root() -> Response:
    return render.redirect("/incidents")


@router.get("/static/web/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        return render.secure(Response(status_code=404))
    response = FileResponse(render.STATIC / name, media_type=_STATIC[name])
    return render.secure(response)


@router.get("/incidents")
async def incident_list(request: Request, state: str = "", severity: str = "", namespace: str = "") -> Response:
    user = await user_or_signin(request)
    if not isinstance(user, User):
        return user
    bad = [f"{k}={v!r}" for k, v, ok in (
        ("state", state, not state or state in {s.value for s in State}),
        ("severity", severity, not severity or severity in {s.value for s in Severity}),
    ) if not ok]  # fmt: skip
    if bad:
        INPUT_REJECTED.labels(source="web", reason="bad_filter").inc()
        return render.page(request, "error.html", status=400, user=user, title="Bad filter",
                           message="Unknown filter value: " + ", ".join(bad))  # fmt: skip
    svc = state_of(request)
    filters = views.Filters(state, severity, namespace.strip())
    recent = await svc.incidents.list(state=state or None, limit=LIST_LIMIT)
    cut = len(recent) >= LIST_LIMIT
    if not state:  # open first means the open ones too, however many newer closed ones there are
        seen = {r.id for r in recent}
        opened = await svc.incidents.list(open_only=True, limit=LIST_LIMIT)
        recent += [r for r in opened if r.id not in seen]
        cut = cut or len(opened) >= LIST_LIMIT
    html = render.page(
        request, "list.html", user=user, records=views.ordered(recent, filters), filters=filters, views=views,
        now=svc.clock.now(), states=[s.value for s in State], severities=[s.value for s in Severity],
        pauses=await _pauses(svc), limit=LIST_LIMIT if cut else 0,
    )  # fmt: skip
    return finish(request, html, user)


async def incident_page(
    request: Request, incident_id: str, user: User, *, status: int = 200, error: str = ""
) -> Response:
    """One incident's page; also what a refused form renders (with ``error`` and its status)."""
    svc = state_of(request)
    try:
        record = await svc.incidents.get(incident_id)
    except IncidentNotFoundError:
        return render.page(request, "error.html", status=404, user=user, title="Not found",
                           message=f"There is no incident {incident_id}.")  # fmt: skip
    approver = svc.incidents.approvers.by_name.get(user.approver) if user.approver else None
    rules = svc.rules.current if svc.rules.loaded else None
    done = DONE.get(request.query_params.get("done", ""), "")
    return render.page(
        request, "incident.html", status=status, user=user, r=record, views=views, now=svc.clock.now(),
        next=views.next_step(record, svc.clock.now()), progress=views.progress(record),
        roles=views.roles_to_offer(record, approver.roles if approver else ()),
        facts=views.rule_facts(rules, record.rule), deliveries=await deliveries(svc.store, record.id),
        workloads=views.workload_links(record.decision.targets, svc.settings.web), error=error, done=done,
        before=await previous_deploy(svc, record),
        pauses=[p for p in await _pauses(svc) if p.covers(record.rule, record.decision.targets)],
    )  # fmt: skip


async def _pauses(svc: ApiState) -> list[Pause]:
    """The pauses of automated rollback in force now (``control.pauses``), as the leader's guard reads them."""
    return await Pauses(svc.store, svc.clock).active()


async def previous_deploy(svc: ApiState, record: IncidentRecord) -> DeployEvent | None:
    """The deploy the blamed one replaced: the revision the rollback returns to, else the last one before it."""
    deploy = record.decision.deploy
    if deploy is None:
        return None
    history = await DeployHistoryStore(svc.store).snapshot([deploy.target], None, deploy.at - PREVIOUS_DEPLOY_WINDOW)
    earlier = [
        e for e in history.events
        if e.event_id != deploy.event_id and e.kind is DeployKind.SUCCEEDED and e.at <= deploy.at
    ]  # fmt: skip
    wanted = record.decision.to_revision
    return next((e for e in earlier if wanted is not None and e.revision == wanted), earlier[0] if earlier else None)


@router.get("/incidents/{incident_id}")
async def incident(request: Request, incident_id: str) -> Response:
    user = await user_or_signin(request)
    if not isinstance(user, User):
        return user
    return finish(request, await incident_page(request, incident_id, user), user)


@router.get("/incidents/{incident_id}/version")
async def incident_version(request: Request, incident_id: str) -> Response:
    """When the incident last changed: the page's script polls this and reloads when it moves."""
    user = await user_or_signin(request)
    if not isinstance(user, User):
        return render.secure(JSONResponse({"detail": "signed out"}, status_code=401))
    try:
        record = await state_of(request).incidents.get(incident_id)
    except IncidentNotFoundError:
        return render.secure(JSONResponse({"detail": "not found"}, status_code=404))
    return render.secure(JSONResponse({"updated_at": record.updated_at.isoformat(), "state": record.state.value}))


@router.get("/rules")
async def rules_page(request: Request) -> Response:
    user = await user_or_signin(request)
    if not isinstance(user, User):
        return user
    registry = state_of(request).rules
    per_file: Counter[str] = Counter()
    rs = registry.current if registry.loaded else None
    if rs is not None:
        for origin in (*(t.origin for t in rs.thresholds), *(d.origin for d in rs.decisions)):
            per_file[origin.file] += 1
    result = registry.last_result
    html = render.page(
        request, "rules.html", user=user, rs=rs, per_file=per_file, registry=registry, result=result,
        files=list(rs.files) if rs is not None else [],
    )  # fmt: skip
    return finish(request, html, user)
