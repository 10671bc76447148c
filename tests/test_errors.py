"""One error model: the same error has the same outcome from every kind of activity.

Each family is raised inside the real activities (worktree, Argo CD, discovery,
metrics) through the dependencies they are handed (a credential lookup, an HTTP
hook), converted by the real activity boundary, carried through Temporal's
failure converter as history would record it, and read back by the workflows'
one classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, RetryState
from temporalio.testing import ActivityEnvironment

from activities.argocd import ArgoCDActivities, ArgoCDSettings
from activities.boundary import converts_errors
from activities.discovery import DiscoveryActivities
from activities.metrics import MetricActivities
from activities.notify import NotifyActivities
from activities.project import ProjectActivities
from activities.worktree import WorktreeActivities
from freightline import errors
from freightline.contracts.argocd import ArgoCDStepInput
from freightline.contracts.promotion import StepStatus, WorktreeBatch, plan_promotion
from freightline.contracts.warehouse import DiscoveryRequest
from freightline.errors import (
    ArgoCDResponseError,
    FreightlineError,
    Outcome,
    diagnose,
    non_retryable_error_types,
    root_cause,
    to_application_error,
)
from freightline.kargo.analysis import MeasureRequest
from freightline.kargo.credentials import CredentialStore, GitCredentials
from freightline.kargo.resources import Metric, RepoSubscription
from tests.pipelines import freight_for, single_stage_project, with_freight

FAMILIES: list[type[FreightlineError]] = [
    value
    for value in vars(errors).values()
    if isinstance(value, type) and issubclass(value, FreightlineError)
]

# What the module docstring's table says, written out once more on purpose: a change to a
# class's outcome or retryability must be deliberate (recorded histories rely on them).
EXPECTED = {
    "FreightlineError": (Outcome.ERRORED, False),
    "ConfigError": (Outcome.ERRORED, False),
    "PathEscapeError": (Outcome.ERRORED, False),
    "ExpressionError": (Outcome.ERRORED, False),
    "CredentialError": (Outcome.ERRORED, False),
    "NotFoundError": (Outcome.ERRORED, False),
    "RequestRefused": (Outcome.ERRORED, False),
    "ApprovalRefused": (Outcome.ERRORED, False),
    "DiscoveryError": (Outcome.ERRORED, False),
    "RegistryError": (Outcome.ERRORED, False),
    "AuthenticationError": (Outcome.ERRORED, False),
    "RegistryUnavailableError": (Outcome.ERRORED, True),
    "ArgoCDUnavailableError": (Outcome.ERRORED, True),
    "EndpointUnavailableError": (Outcome.ERRORED, True),
    "NotificationError": (Outcome.ERRORED, True),
    "StepError": (Outcome.FAILED, False),
    "GitCommandError": (Outcome.FAILED, False),
    "ArgoCDResponseError": (Outcome.FAILED, False),
    "ForgeUnavailableError": (Outcome.ERRORED, True),
    "PullRequestError": (Outcome.FAILED, False),
    "PullRequestNotMergeable": (Outcome.FAILED, False),
    "PullRequestNotReady": (Outcome.FAILED, False),
}


def make(family: type[FreightlineError]) -> FreightlineError:
    if family is ArgoCDResponseError:
        return ArgoCDResponseError(409, 9, "injected")
    return family("injected")


def raiser(family: type[FreightlineError]) -> Callable[..., NoReturn]:
    def raise_it(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise make(family)

    return raise_it


# --- the activities, each failing through what it is handed ----------------------------------


def run_worktree(family: type[FreightlineError], tmp_path: Path) -> None:
    clone = {
        "uses": "git-clone",
        "config": {"repoURL": "REPO_URL", "checkout": [{"branch": "main", "path": "./src"}]},
    }
    freight = freight_for("1.0.0")
    resources = with_freight(single_stage_project(tmp_path, [clone]), freight)
    plan = plan_promotion(resources, "test", freight.metadata.name, "promotion:p:test:errors")
    batch = WorktreeBatch(plan=plan, step_indexes=(0,))
    # The step asks the worker for the repository's credentials first: that lookup fails.
    activities = WorktreeActivities(git_credentials=raiser(family))
    ActivityEnvironment().run(activities.run_worktree_steps, batch)


def run_argocd(family: type[FreightlineError], _tmp_path: Path) -> None:
    # The request to Argo CD fails before it leaves the worker (an httpx request hook).
    activities = ArgoCDActivities(
        ArgoCDSettings(server="http://127.0.0.1:9", token="t"),
        event_hooks={"request": [raiser(family)]},
    )
    request = ArgoCDStepInput(
        project="p",
        stage="test",
        promotion="promotion:p:test:errors",
        step="wait",
        uses="argocd-wait",
        config={"apps": [{"name": "app"}]},
    )
    try:
        ActivityEnvironment().run(activities.argocd_wait, request)
    finally:
        activities.close()


class _FailingStore(CredentialStore):
    def __init__(self, family: type[FreightlineError]) -> None:
        super().__init__(None)
        self.family = family

    def git(self, repo_url: str) -> GitCredentials | None:
        raise make(self.family)


async def run_discovery(family: type[FreightlineError], tmp_path: Path) -> None:
    subscription = RepoSubscription.model_validate({"git": {"repoURL": tmp_path.as_uri()}})
    activities = DiscoveryActivities(_FailingStore(family))
    try:
        await ActivityEnvironment().run(
            activities.discover_warehouse,
            DiscoveryRequest(project="p", warehouse="w", subscriptions=(subscription,)),
        )
    finally:
        await activities.aclose()


# The measurement activity reads nothing it is handed but its request, so it fails the two
# ways its request can make it fail.
METRIC_FAILURES: dict[str, dict[str, Any]] = {
    "ConfigError": {"web": {"url": "http://127.0.0.1:9/{{args.path}}"}},
    "CredentialError": {
        "web": {
            "url": "http://127.0.0.1:9/",
            "headers": [{"key": "X-Token", "value": "{{env.FREIGHTLINE_METRIC_UNSET}}"}],
        }
    },
}


def run_metrics(family: type[FreightlineError], _tmp_path: Path) -> None:
    provider = METRIC_FAILURES[family.__name__]
    metric = Metric.model_validate({"name": "m", "provider": provider})
    ActivityEnvironment().run(MetricActivities().measure_metric, MeasureRequest(metric=metric))


async def failure_of(kind: str, family: type[FreightlineError], tmp_path: Path) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        if kind == "worktree":
            run_worktree(family, tmp_path)
        elif kind == "argocd":
            run_argocd(family, tmp_path)
        elif kind == "discovery":
            await run_discovery(family, tmp_path)
        else:
            run_metrics(family, tmp_path)
    return caught.value


def recorded(err: ApplicationError) -> ActivityError:
    """``err`` as a workflow sees it: encoded into a history failure, decoded, wrapped."""
    failure = Failure()
    converter = pydantic_data_converter
    converter.failure_converter.to_failure(err, converter.payload_converter, failure)
    decoded = converter.failure_converter.from_failure(failure, converter.payload_converter)
    wrapper = ActivityError(
        "Activity task failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="test",
        activity_type="any",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    wrapper.__cause__ = decoded
    return wrapper


CASES = [
    *((kind, family) for kind in ("worktree", "argocd", "discovery") for family in FAMILIES),
    *(("metrics", family) for family in FAMILIES if family.__name__ in METRIC_FAILURES),
]


@pytest.mark.parametrize(
    ("kind", "family"), CASES, ids=[f"{kind}-{family.__name__}" for kind, family in CASES]
)
async def test_each_family_has_its_outcome_from_each_kind_of_activity(
    kind: str, family: type[FreightlineError], tmp_path: Path
) -> None:
    outcome, retryable = EXPECTED[family.__name__]

    err = await failure_of(kind, family, tmp_path)

    assert err.type == family.__name__
    assert err.non_retryable is not retryable
    assert "injected" in err.message or kind == "metrics"
    (details,) = err.details
    assert details["outcome"] == outcome.value
    failure = diagnose(recorded(err))
    assert (failure.outcome, failure.type, failure.reason) == (outcome, err.type, err.message)
    if kind in ("worktree", "argocd"):  # the step is named, for the promotion's failed step
        assert failure.details["step"] in ("step-0", "wait")
        assert err.message.startswith('step "')


def test_every_activity_the_worker_runs_converts_at_the_boundary() -> None:
    from worker import build_worker  # noqa: F401 - the activities below are the worker's

    settings = ArgoCDSettings(server="http://127.0.0.1:9", token="t")
    for activity_fn in (
        ProjectActivities.resolve_promotion,
        WorktreeActivities.run_worktree_steps,
        ArgoCDActivities(settings).argocd_update,
        ArgoCDActivities(settings).argocd_wait,
        ArgoCDActivities(settings).argocd_health,
        DiscoveryActivities(CredentialStore(None)).discover_warehouse,
        MetricActivities().measure_metric,
        NotifyActivities((), ui_url="http://localhost:8233").notify,
    ):
        assert converts_errors(activity_fn), activity_fn


def test_a_step_with_continue_on_error_records_its_errors_outcome(tmp_path: Path) -> None:
    statuses = {}
    for family in (errors.ConfigError, errors.GitCommandError):
        clone = {
            "uses": "git-clone",
            "continueOnError": True,
            "config": {"repoURL": "REPO_URL", "checkout": [{"branch": "main", "path": "./src"}]},
        }
        freight = freight_for("1.0.0")
        resources = with_freight(single_stage_project(tmp_path, [clone]), freight)
        plan = plan_promotion(resources, "test", freight.metadata.name, "promotion:p:test:c")
        activities = WorktreeActivities(git_credentials=raiser(family))
        (outcome,) = ActivityEnvironment().run(
            activities.run_worktree_steps, WorktreeBatch(plan=plan, step_indexes=(0,))
        )
        statuses[family.__name__] = outcome.status
    assert statuses == {"ConfigError": StepStatus.ERRORED, "GitCommandError": StepStatus.FAILED}


# --- the model itself ------------------------------------------------------------------------


def test_the_table_is_the_classes() -> None:
    assert {f.__name__: (f.outcome, f.retryable) for f in FAMILIES} == EXPECTED


def test_retry_policies_skip_exactly_the_errors_a_retry_cannot_fix() -> None:
    names = non_retryable_error_types()
    assert set(names) == {name for name, (_, retryable) in EXPECTED.items() if not retryable}
    assert names[0] == "FreightlineError" and len(names) == len(set(names))


@pytest.mark.parametrize(
    ("recorded_type", "outcome"),
    [
        # Types recorded by runs before this model (tests/histories, runs in flight).
        ("NotFoundError", Outcome.ERRORED),
        ("ConfigError", Outcome.ERRORED),
        ("ExpressionError", Outcome.ERRORED),
        ("PathEscapeError", Outcome.ERRORED),
        ("CredentialError", Outcome.ERRORED),
        ("ArgoCDUnavailableError", Outcome.ERRORED),
        ("StepError", Outcome.FAILED),
        ("GitCommandError", Outcome.FAILED),
        # Anything else a worker can produce: an unexpected exception, a timeout.
        ("KeyError", Outcome.ERRORED),
        (None, Outcome.ERRORED),
    ],
)
def test_recorded_failures_without_an_outcome_classify_by_type(
    recorded_type: str | None, outcome: Outcome
) -> None:
    old = ApplicationError("it went wrong", {"step": "s", "uses": "git-push"}, type=recorded_type)
    failure = diagnose(recorded(old))
    assert (failure.outcome, failure.reason) == (outcome, "it went wrong")
    assert failure.details["step"] == "s"


def test_an_unknown_type_keeps_the_outcome_its_details_carry() -> None:
    failure = diagnose(ApplicationError("no", {"outcome": "Failed"}, type="PluginRefused"))
    assert failure.outcome is Outcome.FAILED


def test_root_cause_unwraps_activity_and_child_workflow_errors() -> None:
    cause = to_application_error(errors.StepError("sync failed", step="update"))
    activity_error = recorded(cause)
    child = ChildWorkflowError(
        "Child Workflow execution failed",
        namespace="default",
        workflow_id="w",
        run_id="r",
        workflow_type="Promotion",
        initiated_event_id=1,
        started_event_id=2,
        retry_state=None,
    )
    child.__cause__ = activity_error
    root = root_cause(child)
    assert isinstance(root, ApplicationError) and root.type == "StepError"
    assert root_cause(cause) is cause
    assert diagnose(child).outcome is Outcome.FAILED
    timeout = httpx.ReadTimeout("slow")
    assert diagnose(timeout) == errors.Diagnosis(Outcome.ERRORED, "slow", "ReadTimeout")


def test_locate_prefixes_once_and_adds_details() -> None:
    err = errors.ConfigError("bad").locate('step "a" (git-push)', step="a")
    err.locate('step "a" (git-push)', uses="git-push")
    assert str(err) == 'step "a" (git-push): bad'
    assert err.details == {"step": "a", "uses": "git-push"}
    converted = to_application_error(err)
    assert converted.details == ({"outcome": "Errored", "step": "a", "uses": "git-push"},)
