"""Every error Freightline raises on purpose, and what each one means for a promotion.

    class                              outcome  retry  raised when
    FreightlineError                   Errored  no     (the base: anything a user can fix)
    ├── ConfigError                    Errored  no     the configuration does not allow it: a
    │   │                                              project document, a step's config, an
    │   │                                              app or path it names, the worker's setup
    │   └── PathEscapeError            Errored  no     a step path leaves the working directory
    ├── ExpressionError                Errored  no     a ``${{ }}`` expression fails to parse or
    │                                                  evaluate
    ├── CredentialError                Errored  no     a credential is missing, malformed or
    │                                                  refused (Argo CD's 401)
    ├── NotFoundError                  Errored  no     an unknown project, stage, freight, ...
    ├── RequestRefused                 Errored  no     a workflow's update validator refused a
    │   │                                              request (promote, verify, approve, ...)
    │   └── ApprovalRefused            Errored  no     ... an approval or rejection of a promotion
    ├── DiscoveryError                 Errored  no     a subscription's repository, branch or
    │                                                  chart is not there
    ├── RegistryError                  Errored  no     a container registry refused a request
    │   ├── AuthenticationError        Errored  no     ... the worker's credentials, or needs some
    │   └── RegistryUnavailableError   Errored  yes    ... timed out, unreachable, 5xx or 429
    ├── ArgoCDUnavailableError         Errored  yes    Argo CD timed out, unreachable, 5xx or 429
    ├── EndpointUnavailableError       Errored  yes    an HTTP endpoint a step calls (``http``,
    │                                                  ``http-download``, a chart repository)
    │                                                  timed out, unreachable, 5xx or 429
    ├── NotificationError              Errored  yes    a notification endpoint did not take an
    │                                                  event (it never fails a promotion)
    ├── ForgeUnavailableError          Errored  yes    a forge's API (GitHub, GitLab, Gitea)
    │                                                  timed out, unreachable, 5xx, or kept
    │                                                  rate-limiting past its Retry-After
    └── StepError                      Failed   no     a step ran and the world said no
        ├── GitCommandError            Failed   no     git failed, push rejected (git's words)
        ├── ArgoCDResponseError        Failed   no     Argo CD refused a request
        └── PullRequestError           Failed   no     a forge refused a pull request request
            └── PullRequestNotMergeable
                │                      Failed   no     ... it conflicts, is closed unmerged, or
                │                                      the forge will not merge it (405/409)
                └── PullRequestNotReady
                                       Failed   no     ... not yet: approvals, checks, a draft,
                                                       or a base that moved (a wait may retry)

**Outcome** is what a promotion (or a step with ``continueOnError``) ends as
when the error stops it: ``Failed`` when the step ran and the world refused
(a push rejected, kustomize failing on the repository's files, an Argo CD
sync failed, an app Degraded or never Healthy in time); ``Errored`` when it
could not run as configured (bad config, an unauthorised app, a missing
credential, a missing kustomize binary) or the infrastructure kept failing.
The same mistake has the same outcome from every activity and from the
workflow itself. **Retry** says whether trying again can help; only the
``...Unavailable`` errors are transient, and once their retries run out the
promotion is Errored.

Activities raise these. One conversion at the activity boundary
(``activities.boundary.defn``, :func:`to_application_error`) turns them into
``ApplicationError(type=<class name>, non_retryable=not retryable,
details=[{"outcome": ..., ...}])``; workflows read a failure back with
:func:`diagnose`, which unwraps it with :func:`root_cause` and finds the
outcome by the error's type name, so failures recorded before ``details``
carried an outcome classify the same on replay. Retry policies take
:func:`non_retryable_error_types`. A workflow's update validator refuses with
the same conversion (``raise to_application_error(RequestRefused(...))``),
so a caller sees a named, non-retryable type, never ``ValueError``. Every class lives here (not next to the
code that raises it) because workflows must know the whole tree without
importing activity code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

__all__ = [
    "ApprovalRefused",
    "ArgoCDResponseError",
    "ArgoCDUnavailableError",
    "AuthenticationError",
    "ConfigError",
    "CredentialError",
    "Diagnosis",
    "DiscoveryError",
    "EndpointUnavailableError",
    "ExpressionError",
    "ForgeUnavailableError",
    "FreightlineError",
    "GitCommandError",
    "NotFoundError",
    "NotificationError",
    "Outcome",
    "PathEscapeError",
    "PullRequestError",
    "PullRequestNotMergeable",
    "PullRequestNotReady",
    "RegistryError",
    "RegistryUnavailableError",
    "RequestRefused",
    "StepError",
    "diagnose",
    "error_class",
    "non_retryable_error_types",
    "refusing",
    "root_cause",
    "to_application_error",
]


class Outcome(StrEnum):
    """How a promotion or step ends when an error stops it (Kargo's phase names)."""

    FAILED = "Failed"
    """The step ran and the world said no."""
    ERRORED = "Errored"
    """It could not run as configured, or the infrastructure kept failing."""


class FreightlineError(Exception):
    """Base of every error a user can cause and fix; printed as one line, never a traceback.

    ``details`` (keyword arguments, or added by :meth:`locate`) travel with the
    converted ``ApplicationError``: the step alias and ``uses``, a metric's
    name. They must be plain JSON and never hold a secret.
    """

    outcome: ClassVar[Outcome] = Outcome.ERRORED
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details)

    def locate(self, where: str = "", **details: Any) -> Self:
        """Say where it happened: prefix the message with ``where`` (unless it already
        starts with it) and add ``details``. Returns the error itself, to re-raise."""
        text = str(self)
        if where and not text.startswith(where):
            self.args = (f"{where}: {text}", *self.args[1:])
        self.details.update(details)
        return self


class ConfigError(FreightlineError):
    """The configuration does not allow it: a document, a step's config, the worker's setup."""


class PathEscapeError(ConfigError):
    """A step path resolves outside its working directory."""


class ExpressionError(FreightlineError):
    """A ``${{ }}`` expression failed to parse or evaluate."""


class CredentialError(FreightlineError):
    """A credential the worker needs is missing, malformed, or refused."""


class NotFoundError(FreightlineError):
    """A named resource (project, stage, freight, ...) does not exist."""


class RequestRefused(FreightlineError):
    """A workflow's update validator refused a request; the message says why. Nothing changed."""


class ApprovalRefused(RequestRefused):
    """An approval or rejection a waiting promotion cannot take (who, or when)."""


class DiscoveryError(FreightlineError):
    """A subscription's repository, branch or chart is missing or unreadable."""


class RegistryError(FreightlineError):
    """A container registry refused or failed a request."""


class AuthenticationError(RegistryError):
    """A registry refused the worker's credentials, or needs credentials the worker lacks."""


class RegistryUnavailableError(RegistryError):
    """A registry timed out, could not be reached, or answered 5xx/429; a retry may succeed."""

    retryable = True


class ArgoCDUnavailableError(FreightlineError):
    """Argo CD could not be reached, timed out, or answered 429/5xx: a retry may succeed."""

    retryable = True


class EndpointUnavailableError(FreightlineError):
    """An HTTP endpoint a step calls timed out, could not be reached, or answered 5xx/429."""

    retryable = True


class NotificationError(FreightlineError):
    """A notification endpoint refused an event or could not be reached: a retry may succeed."""

    retryable = True


class ForgeUnavailableError(FreightlineError):
    """A forge's API timed out, could not be reached, answered 5xx, or rate-limited for longer
    than the client waits: a retry may succeed."""

    retryable = True


class StepError(FreightlineError):
    """A promotion step ran and failed: the outside world (git, kustomize, Argo CD) said no."""

    outcome = Outcome.FAILED


class GitCommandError(StepError):
    """A git command failed; the message carries git's own stderr, credentials scrubbed."""


class ArgoCDResponseError(StepError):
    """Argo CD answered a request with an error (grpc-gateway ``{"code", "message"}``)."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class PullRequestError(StepError):
    """A forge answered a pull (merge) request call with an error; the message names the
    repository, the pull request and the forge's own words."""


class PullRequestNotMergeable(PullRequestError):
    """The forge will not merge the pull request: it conflicts with its target, was closed
    without merging, or the forge refuses (GitHub's 405, GitLab's 405/409/422, Gitea's 405/409,
    Bitbucket's 400, Azure DevOps' 400/409)."""


class PullRequestNotReady(PullRequestNotMergeable):
    """The forge will not merge the pull request yet: it lacks approvals or passing checks, is a
    draft, or its base moved during the merge. Unlike a conflict this can clear by itself, so
    a step that waits for a merge tries again later; otherwise it fails like any refusal."""


# --- the activity boundary and back ------------------------------------------------------------


def _family(root: type[FreightlineError] = FreightlineError) -> Iterator[type[FreightlineError]]:
    """``root`` and its subclasses, depth first in definition order."""
    yield root
    for subclass in root.__subclasses__():
        yield from _family(subclass)


def error_class(type_name: str | None) -> type[FreightlineError] | None:
    """The error class an ``ApplicationError`` type names, or None for any other type."""
    return next((c for c in _family() if c.__name__ == type_name), None)


def non_retryable_error_types() -> list[str]:
    """The type names a retry policy must not retry: every class that is not ``retryable``."""
    return [c.__name__ for c in _family() if not c.retryable]


def to_application_error(err: FreightlineError) -> ApplicationError:
    """The one conversion of an activity's error into what Temporal records."""
    kind = type(err)
    return ApplicationError(
        str(err),
        {"outcome": kind.outcome.value, **err.details},
        type=kind.__name__,
        non_retryable=not kind.retryable,
    )


@contextlib.contextmanager
def refusing() -> Iterator[None]:
    """Around an update validator's checks: a FreightlineError refuses the update with its own
    type, non-retryable (as :func:`to_application_error`), not as a retryable generic failure."""
    try:
        yield
    except FreightlineError as err:
        raise to_application_error(err) from None


def root_cause(failure: BaseException) -> BaseException:
    """The error an ``ActivityError`` / ``ChildWorkflowError`` wraps (nested ones too).

    Anything else is returned as it is: a local activity's ``ApplicationError``
    (or timeout) can arrive unwrapped.
    """
    cause = failure
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return cause


@dataclass(frozen=True)
class Diagnosis:
    """A failure as a workflow reports it: outcome, one-line reason, error type, details."""

    outcome: Outcome
    reason: str
    type: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def diagnose(failure: BaseException) -> Diagnosis:
    """The outcome and reason of a failed activity or child workflow (or a FreightlineError).

    The outcome comes from the error class the type names; a type this module
    does not know uses the ``outcome`` its details carry, and anything else
    (a timeout, a cancelled or terminated child, a crash) is Errored.
    """
    cause = root_cause(failure)
    if isinstance(cause, FreightlineError):
        kind = type(cause)
        return Diagnosis(kind.outcome, str(cause), kind.__name__, dict(cause.details))
    if isinstance(cause, ApplicationError):
        first = cause.details[0] if cause.details else None
        details: dict[str, Any] = dict(first) if isinstance(first, Mapping) else {}
        known = error_class(cause.type)
        if known is not None:
            outcome = known.outcome
        else:
            recorded = details.get("outcome")
            outcome = Outcome(recorded) if recorded in set(Outcome) else Outcome.ERRORED
        return Diagnosis(outcome, cause.message, cause.type, details)
    return Diagnosis(Outcome.ERRORED, str(cause), type(cause).__name__)
