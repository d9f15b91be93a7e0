"""GitOps detection, the rollback budget and the loop breaker, as pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemon.actions.safety import PastIntent, check_budget, check_gitops, check_loop
from daemon.actions.undo import plan_undo
from tests.unit.actions.factories import deployment, history

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def past(
    id_: str,
    *,
    ago_s: float = 60,
    automatic: bool = True,
    dry_run: bool = False,
    patched: bool = True,
    state: str = "ready",
    from_hash: str = "",
    to_hash: str = "",
) -> PastIntent:
    return PastIntent(id_, state, automatic, dry_run, NOW - timedelta(seconds=ago_s), patched, from_hash, to_hash)


@pytest.mark.parametrize(
    ("labels", "annotations", "owner"),
    [
        ({"argocd.argoproj.io/instance": "shop"}, {}, "Argo CD application 'shop'"),
        ({}, {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:prod/web"}, "Argo CD application 'shop'"),
        (
            {"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
            {},
            "Flux Kustomization 'flux-system/apps'",
        ),
        ({"helm.toolkit.fluxcd.io/name": "web"}, {}, "Flux HelmRelease 'web'"),
    ],
)
def test_gitops_managed_is_refused_naming_the_owner(
    labels: dict[str, str], annotations: dict[str, str], owner: str
) -> None:
    dep = deployment("web:v3", "3", annotations=annotations)
    dep["metadata"]["labels"] = labels
    refusal = check_gitops(dep)
    assert refusal is not None
    assert refusal.reason == "gitops"
    assert owner in refusal.detail


def test_plain_deployment_is_not_gitops() -> None:
    assert check_gitops(deployment("web:v3", "3")) is None


def _budget(intents: list[PastIntent]) -> str | None:
    refusal = check_budget(intents, now=NOW, window_s=3600, max_rollbacks=2, exclude_id="inc9:prod/web")
    return refusal.reason if refusal else None


def test_budget_allows_two_and_refuses_the_third() -> None:
    assert _budget([past("a")]) is None
    assert _budget([past("a"), past("b")]) == "budget"


def test_budget_counts_only_automatic_real_patched_rollbacks_in_the_window() -> None:
    free = [
        past("old", ago_s=3601),
        past("manual", automatic=False),
        past("dry", dry_run=True),
        past("never-patched", patched=False, state="failed"),
        past("inc9:prod/web"),  # the same intent, re-executed
    ]
    assert _budget([past("a"), *free]) is None
    assert _budget([past("a"), past("crashed", patched=False, state="applied")]) == "budget"


def test_loop_breaker_refuses_rolling_back_our_own_rollback() -> None:
    plan = plan_undo(deployment("web:v3", "3"), history())
    refusal = check_loop(plan, [past("a", from_hash="hv4", to_hash="hv3")], exclude_id="x")
    assert refusal is not None
    assert refusal.reason == "loop"


def test_loop_breaker_refuses_a_revision_returned_to_by_anyone() -> None:
    rs = history()
    rs[2]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = "1"
    refusal = check_loop(plan_undo(deployment("web:v3", "3"), rs), [], exclude_id="x")
    assert refusal is not None
    assert "revisions 1" in refusal.detail


def test_loop_breaker_refuses_a_known_bad_target() -> None:
    plan = plan_undo(deployment("web:v3", "3"), history())  # → v2
    refusal = check_loop(plan, [past("a", from_hash="hv2", to_hash="hv1")], exclude_id="x")
    assert refusal is not None
    assert refusal.reason == "known_bad"
    assert check_loop(plan, [past("a", from_hash="hv2", to_hash="hv1", dry_run=True)], exclude_id="x") is None
