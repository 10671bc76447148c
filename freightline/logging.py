"""Structured JSON logs, bound to Temporal workflow and activity context.

One configuration for the CLI, the worker and the tests: structlog renders
JSON lines; the standard library's records (the Temporal SDK's own, and
``workflow.logger`` inside workflows, which is replay-safe) go through the
same processors, so a worker's output is one JSON stream. The SDK attaches
``temporal_workflow`` / ``temporal_activity`` dicts to its records; they are
lifted into top-level keys (``workflow_id``, ``run_id``, ``activity_type``,
``attempt``) so logs can be filtered by run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity

_CONTEXT_KEYS = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_id": "activity_id",
    "activity_type": "activity_type",
    "attempt": "attempt",
    "task_queue": "task_queue",
}


def _lift_temporal_context(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    for attr in ("temporal_workflow", "temporal_activity"):
        context = getattr(record, attr, None) if record is not None else None
        if isinstance(context, dict):
            for key, value in context.items():
                target = _CONTEXT_KEYS.get(key)
                if target and target not in event_dict:
                    event_dict[target] = value
    return event_dict


def configure_logging(level: str = "INFO", *, json: bool = True, path: Path | None = None) -> None:
    """Route structlog and stdlib logging to one stream: stderr, or the file at ``path``."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _lift_temporal_context],
        processors=[
            _lift_temporal_context,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler: logging.Handler = (
        logging.FileHandler(path) if path is not None else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger; inside an activity it is bound to the activity's context."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    if activity.in_activity():
        info = activity.info()
        logger = logger.bind(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity_type=info.activity_type,
            activity_id=info.activity_id,
            attempt=info.attempt,
        )
    return logger
