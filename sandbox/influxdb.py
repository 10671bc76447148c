"""An InfluxDB 2 Flux query API emulator: ``POST /api/v2/query``, answering annotated CSV.

Debian ships InfluxDB 1.6, which has no Flux, and InfluxDB 2 is not packaged;
so the Flux endpoint is emulated, and every request and answer is checked
against InfluxData's published OpenAPI description of it
(``tests/reference/influxdb-v2-query.yaml``, an excerpt of ``contracts/oss.yml``).
A request it refuses is answered 400 and kept in :attr:`InfluxDBEmulator.violations`.

Flux itself is not interpreted: :meth:`InfluxDBEmulator.set_values` says which
``_value`` rows a query (matched exactly) gives, as one table of annotated CSV,
InfluxDB's answer format; another query starting with ``from(`` gives no rows,
anything else a compilation error (400, InfluxDB's ``{"code": "invalid", ...}``).
``Authorization: Token <token>`` must carry the emulator's token (else 401) and
``org`` name its organisation (else 404), as InfluxDB answers.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.validation.request.exceptions import SecurityValidationError
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import ApiEmulator, json_response
from sandbox.datadog import REFERENCE, openapi_problems

__all__ = ["InfluxDBEmulator"]

_DESCRIPTION: Path = REFERENCE / "influxdb-v2-query.yaml"


class InfluxDBEmulator(ApiEmulator):
    """InfluxDB's Flux query endpoint for organisation ``org``, read with ``token``."""

    name = "influxdb"

    def __init__(self, token: str, org: str) -> None:
        self.token = token
        self.org = org
        self.values: dict[str, list[float]] = {}
        # The description gives the CSV answer as a string; openapi-core reads only JSON and
        # form bodies by itself.
        self._spec = OpenAPI.from_file_path(
            str(_DESCRIPTION),
            config=Config(extra_media_type_deserializers={"application/csv": _text}),
        )
        super().__init__()

    def set_values(self, flux: str, values: list[float]) -> None:
        """The ``_value`` of each row the Flux query ``flux`` gives."""
        self.values[flux] = values

    def check_request(self, request: Request) -> list[str]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._spec.validate_request(WerkzeugOpenAPIRequest(request))
        except SecurityValidationError:
            return []  # a missing token is InfluxDB's 401, answered below
        except Exception as err:  # openapi-core's error tree has no one root
            return openapi_problems(err)
        return []

    def check_response(self, request: Request, response: Response) -> list[str]:
        try:
            self._spec.validate_response(
                WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)
            )
        except Exception as err:
            return openapi_problems(err)
        return []

    def answer(self, request: Request) -> Response:
        if request.path != "/api/v2/query" or request.method != "POST":
            return json_response(404, {"code": "not found", "message": "path not found"})
        if request.headers.get("Authorization") != f"Token {self.token}":
            return json_response(401, {"code": "unauthorized", "message": "unauthorized access"})
        if request.args.get("org") != self.org:
            return json_response(
                404,
                {
                    "code": "not found",
                    "message": f'organization name "{request.args.get("org")}" not found',
                },
            )
        flux = (request.get_json(silent=True) or {}).get("query", "")
        if flux in self.values:
            rows = self.values[flux]
        elif flux.strip().startswith("from("):
            rows = []
        else:
            return json_response(
                400,
                {
                    "code": "invalid",
                    "message": f"compilation failed: error at @1:1-1:{len(flux) + 1}: invalid statement",
                },
            )
        return Response(_annotated_csv(rows), status=200, content_type="application/csv")


def _text(body: bytes) -> str:
    return body.decode()


def _annotated_csv(values: list[float]) -> str:
    """One table of Flux's annotated CSV with a ``_value`` column."""
    if not values:
        return "\r\n"
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    start = (now - datetime.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    stop = now.isoformat().replace("+00:00", "Z")
    lines = [
        "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string",
        "#group,false,false,true,true,false,false,true,true",
        "#default,_result,,,,,,,",
        ",result,table,_start,_stop,_time,_value,_field,_measurement",
    ]
    for index, value in enumerate(values):
        at = (
            (now - datetime.timedelta(seconds=len(values) - index))
            .isoformat()
            .replace("+00:00", "Z")
        )
        lines.append(f",,0,{start},{stop},{at},{value},errors,shop")
    return "\r\n".join(lines) + "\r\n\r\n"
