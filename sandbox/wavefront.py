"""A Wavefront chart API emulator: ``GET /api/v2/chart/api``.

Every request's parameters are checked against the operation in Wavefront's
published Swagger description (``tests/reference/wavefront-chart-api.json``,
an excerpt): required ones present, none unknown, enums and booleans as
declared; every answer's body against its ``QueryResult`` definition (JSON
Schema, with jsonschema). Problems are answered 400 and kept in
:attr:`WavefrontEmulator.violations`. (openapi-core reads OpenAPI 3 only; this
description is Swagger 2.0, so the check is this module's.)

Queries are not interpreted: :meth:`WavefrontEmulator.set_series` says which
series (``[[epoch seconds, value], ...]`` each) a query (matched exactly)
gives; another query gives none; a query with unbalanced parentheses is a 400
with Wavefront's ``{"status": {"result": "ERROR", "message": ...}}``. The token
goes in ``Authorization: Bearer``, as Argo Rollouts' client sends it.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import ApiEmulator, json_response
from sandbox.datadog import REFERENCE

__all__ = ["WavefrontEmulator"]

_DESCRIPTION = json.loads((REFERENCE / "wavefront-chart-api.json").read_text())
_OPERATION = _DESCRIPTION["paths"]["/api/v2/chart/api"]["get"]
_RESULT_SCHEMA = {
    **_DESCRIPTION["definitions"]["QueryResult"],
    "definitions": _DESCRIPTION["definitions"],
}


class WavefrontEmulator(ApiEmulator):
    """Wavefront's chart API, read with ``token``."""

    name = "wavefront"

    def __init__(self, token: str) -> None:
        self.token = token
        self.series: dict[str, list[list[list[float]]]] = {}
        super().__init__()

    def set_series(self, query: str, *series: list[list[float]]) -> None:
        """The series (each a list of ``[epoch seconds, value]``) ``query`` gives."""
        self.series[query] = list(series)

    def check_request(self, request: Request) -> list[str]:
        if request.path != "/api/v2/chart/api":
            return []
        declared = {parameter["name"]: parameter for parameter in _OPERATION["parameters"]}
        problems = [f"unknown parameter {name}" for name in request.args if name not in declared]
        for name, parameter in declared.items():
            value = request.args.get(name)
            if value is None:
                if parameter.get("required"):
                    problems.append(f"missing required parameter {name}")
                continue
            if parameter.get("type") == "boolean" and value not in ("true", "false"):
                problems.append(f"parameter {name}: {value!r} is not a boolean")
            if "enum" in parameter and value not in parameter["enum"]:
                problems.append(f"parameter {name}: {value!r} is not one of {parameter['enum']}")
        return problems

    def check_response(self, request: Request, response: Response) -> list[str]:
        if response.status_code != 200:
            return []
        try:
            jsonschema.validate(json.loads(response.get_data()), _RESULT_SCHEMA)
        except jsonschema.ValidationError as err:
            return [f"QueryResult: {err.message}"]
        return []

    def answer(self, request: Request) -> Response:
        if request.path != "/api/v2/chart/api" or request.method != "GET":
            return json_response(404, {"status": {"result": "ERROR", "message": "not found"}})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return json_response(401, {"status": {"result": "ERROR", "message": "unauthorized"}})
        query = request.args["q"]
        if query.count("(") != query.count(")"):
            return json_response(
                400, {"status": {"result": "ERROR", "message": f"Syntax error in query: {query}"}}
            )
        body: dict[str, Any] = {
            "name": request.args.get("n") or query,
            "query": query,
            "granularity": 1,
            "timeseries": [
                {"label": query, "host": f"host-{index}", "tags": {}, "data": data}
                for index, data in enumerate(self.series.get(query, []))
            ],
        }
        return json_response(200, body)
