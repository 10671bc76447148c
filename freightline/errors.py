"""The errors a user can cause, as one typed family.

    FreightlineError                 anything a user can fix; printed as one line, never a traceback
    ├── ConfigError                  a configuration file or document is invalid (file, document, field)
    ├── ExpressionError              a ``${{ }}`` expression failed to parse or evaluate
    ├── StepError                    a promotion step was misconfigured or failed (names the step)
    │   └── PathEscapeError          a step path leaves the working directory
    ├── CredentialError              a credential the worker needs is missing or malformed
    └── NotFoundError                an unknown project, stage, freight, warehouse, ...

Activities raise these; ``activities`` converts them to non-retryable
``ApplicationError``s whose type is the class name, so the workflow and the UI
see the same message.
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
