"""The errors a user can cause, as one typed family.

    FreightlineError                 anything a user can fix; printed as one line, never a traceback
    ├── ConfigError                  a config file or document is invalid (file, document, field)
    ├── ExpressionError              a ``${{ }}`` expression failed to parse or evaluate
    ├── StepError                    a promotion step was misconfigured or failed (names the step)
    │   └── PathEscapeError          a step path leaves the working directory
    ├── CredentialError              a credential the worker needs is missing or malformed
    ├── NotFoundError                an unknown project, stage, freight, warehouse, ...
    └── RegistryError                a container registry refused a request (names registry, repo)
        ├── AuthenticationError      the registry refused the worker's credentials or needs some
        └── RegistryUnavailableError timeout, unreachable, 5xx or 429: transient, worth a retry

Activities raise these; ``activities`` converts them to non-retryable
``ApplicationError``s whose type is the class name, so the workflow and the UI
see the same message. ``RegistryUnavailableError`` is the exception: it is
transient, so it should stay retryable.
"""

from __future__ import annotations


class FreightlineError(Exception):
    """Base of every error a user can cause and fix."""


class ConfigError(FreightlineError):
    """A configuration file or document is invalid."""


class ExpressionError(FreightlineError):
    """A ``${{ }}`` expression failed to parse or evaluate."""


class StepError(FreightlineError):
    """A promotion step was misconfigured or failed."""


class PathEscapeError(StepError):
    """A step path resolves outside its working directory."""


class CredentialError(FreightlineError):
    """A credential the worker needs is missing or malformed."""


class NotFoundError(FreightlineError):
    """A named resource (project, stage, freight, ...) does not exist."""


class RegistryError(FreightlineError):
    """A container registry refused or failed a request."""


class AuthenticationError(RegistryError):
    """A registry refused the worker's credentials, or needs credentials the worker lacks."""


class RegistryUnavailableError(RegistryError):
    """A registry timed out, could not be reached, or answered 5xx/429; a retry may succeed."""
