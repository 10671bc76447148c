"""The ``cloudWatch`` provider: CloudWatch ``GetMetricData`` through boto3.

As in Argo Rollouts: the ``metricDataQueries`` over the last ``interval``
(default 5m), one call; the value is CloudWatch's ``MetricDataResults`` as
Argo Rollouts hands them to the conditions, a list of maps with the SDK's
field names: ``Id``, ``Label``, ``StatusCode``, ``Timestamps`` (RFC 3339),
``Values`` and ``Messages``, so ``all(result[0].Values, {# < 0.01})`` reads
as in Rollouts (Freightline's expressions have no predicates: ``max(result[0].Values)
< 0.01``). An empty ``Values`` is no error: the conditions decide. An error
CloudWatch answers (a refused query, ``Throttling``, a 429, a 5xx) and an
unreachable endpoint are Error measurements.

Credentials: Argo Rollouts uses the controller's AWS credentials (the SDK's
default chain). The worker does the same unless its ``FREIGHTLINE_METRIC_*``
name them, as Secret ``cloudwatch``: ``..._CLOUDWATCH_ACCESS_KEY_ID``,
``..._SECRET_ACCESS_KEY``, ``..._SESSION_TOKEN``, ``..._REGION``, and
``..._ENDPOINT_URL`` (a VPC endpoint, or a stand-in).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)

from activities.providers.measuring import MeasurementFailed, WorkerSecrets, check_url
from freightline.errors import ConfigError, CredentialError
from freightline.kargo.analysis import provider_timeout_seconds
from freightline.kargo.resources import CloudWatchMetric, CloudWatchQuery, parse_duration
from freightline.logging import get_logger

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.type_defs import MetricDataQueryTypeDef

__all__ = ["SECRET", "query"]

SECRET: Final = "cloudwatch"  # noqa: S105 - a Secret's name
_DEFAULT_INTERVAL: Final = datetime.timedelta(minutes=5)


def query(spec: CloudWatchMetric, secrets: WorkerSecrets) -> list[dict[str, Any]]:
    """The ``MetricDataResults``; raises MeasurementFailed."""
    endpoint = secrets.setting(SECRET, "endpoint-url")
    if endpoint is not None:
        check_url(endpoint, f'cloudWatch endpoint-url (secret "{SECRET}")')
    key_id = secrets.get(SECRET, "access-key-id")
    timeout = provider_timeout_seconds(spec)
    try:
        client = boto3.client(
            "cloudwatch",
            region_name=secrets.setting(SECRET, "region"),
            endpoint_url=endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=(
                secrets.require(SECRET, "secret-access-key", "cloudWatch") if key_id else None
            ),
            aws_session_token=secrets.get(SECRET, "session-token") if key_id else None,
            # One try per measurement: the next measurement is the retry, as in Argo Rollouts.
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=timeout,
                read_timeout=timeout,
            ),
        )
    except NoRegionError:
        raise ConfigError(
            "cloudWatch: no AWS region: set FREIGHTLINE_METRIC_CLOUDWATCH_REGION or AWS_REGION "
            "on the worker"
        ) from None
    where = f"CloudWatch ({client.meta.region_name})"
    interval = parse_duration(spec.interval) if spec.interval else _DEFAULT_INTERVAL
    now = datetime.datetime.now(datetime.UTC)
    try:
        answer = client.get_metric_data(
            StartTime=now - interval,
            EndTime=now,
            MetricDataQueries=[_query(q) for q in spec.metric_data_queries],
        )
    except ClientError as err:
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        retry_after = (
            err.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")
        )
        message = f"{where}: {error.get('Code') or status}: {error.get('Message') or ''}".rstrip()
        if retry_after:
            message += f" (Retry-After: {retry_after.strip()[:40]})"
        raise MeasurementFailed(message[:500]) from None
    except NoCredentialsError:
        raise CredentialError(
            "cloudWatch: the worker has no AWS credentials: set "
            "FREIGHTLINE_METRIC_CLOUDWATCH_ACCESS_KEY_ID and ..._SECRET_ACCESS_KEY, or give it "
            "the SDK's usual ones"
        ) from None
    except ParamValidationError as err:
        raise ConfigError(f"cloudWatch: metricDataQueries: {err}") from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise MeasurementFailed(f"{where} did not answer within {timeout:g}s") from None
    except EndpointConnectionError:
        raise MeasurementFailed(
            f"could not reach {where} at {endpoint or 'its AWS endpoint'}"
        ) from None
    except BotoCoreError as err:
        raise MeasurementFailed(f"{where} failed: {type(err).__name__}") from None
    if answer.get("Messages"):
        get_logger(__name__).warning("cloudwatch messages", messages=answer["Messages"])
    return [_result(result) for result in answer.get("MetricDataResults") or []]


def _query(spec: CloudWatchQuery) -> MetricDataQueryTypeDef:
    data = spec.model_dump(by_alias=True, exclude_none=True)
    # The AWS API spells the fields with a capital letter (MetricStat, ReturnData, ...).
    return cast("MetricDataQueryTypeDef", _capitalised(data))  # botocore checks the shape


def _capitalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {key[:1].upper() + key[1:]: _capitalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_capitalised(item) for item in value]
    return value


def _result(result: Any) -> dict[str, Any]:
    return {
        "Id": result.get("Id"),
        "Label": result.get("Label"),
        "StatusCode": result.get("StatusCode"),
        "Timestamps": [
            t.astimezone(datetime.UTC).isoformat() for t in result.get("Timestamps", [])
        ],
        "Values": [float(v) for v in result.get("Values", [])],
        "Messages": [
            {"Code": m.get("Code"), "Value": m.get("Value")} for m in result.get("Messages", [])
        ],
    }
