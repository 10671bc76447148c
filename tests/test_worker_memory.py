"""What keeps an idle worker small (bench/README.md, "1,000 idle workflows"): workflow runs
share their module's code, and the worker starts without clients it may never use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import temporalio.converter
import temporalio.workflow
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.worker import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _fake_info

from worker import share_workflow_code
from workflows.stage import StageWorkflow

REPO = Path(__file__).resolve().parent.parent


def sandboxed_run_class(cls: type) -> type:
    """The workflow class as one new run's sandbox imports it (the SDK's own validation run)."""
    converter = temporalio.converter.DataConverter.default
    details = WorkflowInstanceDetails(
        payload_converter_factory=converter._new_payload_converter,
        failure_converter_class=converter.failure_converter_class,
        interceptor_classes=[],
        defn=temporalio.workflow._Definition.must_from_class(cls),
        info=_fake_info,
        randomness_seed=-1,
        extern_functions={},
        disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[],
        patch_activation_callback=None,
        last_completion_result=Payloads(),
        last_failure=Failure(),
    )
    instance = SandboxedWorkflowRunner().create_instance(details)
    run_class: type = instance.globals_and_locals["__temporal_workflow_class"]  # type: ignore[attr-defined]
    return run_class


async def test_sandboxed_runs_share_their_module_code_but_not_their_module() -> None:
    share_workflow_code()
    share_workflow_code()  # installing again changes nothing
    first, second = sandboxed_run_class(StageWorkflow), sandboxed_run_class(StageWorkflow)
    # Each run still imports its own module: runs share no state ...
    assert first is not second
    assert StageWorkflow not in (first, second)
    # ... from one code object, unmarshalled once per process.
    assert first.run.__code__ is second.run.__code__  # type: ignore[attr-defined]


def test_the_worker_starts_without_provider_clients_or_the_web_stack() -> None:
    heavy = [
        "boto3",  # CloudWatch, Prometheus's SigV4: imported by the first such measurement
        "influxdb_client",
        "datadog_api_client",
        "prometheus_api_client",
        "starlette",  # the UI and the webhook receiver: imported when their settings ask
        "uvicorn",
    ]
    script = (
        "import sys, worker\n"
        "from freightline.contracts.steps import resolve_all\n"
        "resolve_all()\n"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == ""
