"""A Datadog metrics-query API emulator: ``GET /api/v1/query`` and ``POST /api/v2/query/scalar``.

Every request and every answer is checked against Datadog's published
OpenAPI description of those endpoints (``tests/reference/datadog-v1-query.yaml``,
``tests/reference/datadog-v2-query.yaml``, excerpts of the documents Datadog
generates its clients from); a request it refuses is answered 400, and every
problem is kept in :attr:`DatadogEmulator.violations`.

What it knows of Datadog's query language: a metric query
``aggregator:metric.name{scope}`` names a series the test stored with
:meth:`DatadogEmulator.add_points` (matched exactly); any other shape is a
400 "Error parsing query", as Datadog answers. v1 returns the series' points in
the window; v2 reduces each query's points in the window with its
``aggregator`` and evaluates the formula (``+ - * /`` over the query names),
one ungrouped number column; a query with no points gives an empty column.
Keys: the ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` headers must carry the
emulator's keys, else 403, as Datadog answers.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import statistics
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.validation.request.exceptions import SecurityValidationError
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import ApiEmulator, json_response

__all__ = ["REFERENCE", "DatadogEmulator", "openapi_problems"]

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "reference"
_QUERY = re.compile(r"^(avg|sum|min|max):[A-Za-z0-9_.]+\{[^{}]*\}$")

_AGGREGATORS: dict[str, Callable[[list[float]], float]] = {
    "avg": statistics.fmean,
    "mean": statistics.fmean,
    "min": min,
    "max": max,
    "sum": math.fsum,
    "last": lambda values: values[-1],
    "l2norm": lambda values: math.sqrt(math.fsum(v * v for v in values)),
    "area": math.fsum,  # one-second points: the area is their sum
    "percentile": lambda values: (
        statistics.quantiles(values, n=100)[94] if len(values) > 1 else values[0]
    ),
}
_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def openapi_problems(err: Exception) -> list[str]:
    """What openapi-core found wrong, as one line (its error and the schema errors under it)."""
    details = [str(err)]
    cause = err.__cause__
    for schema_error in getattr(cause, "schema_errors", None) or getattr(err, "schema_errors", []):
        details.append(str(getattr(schema_error, "message", schema_error)))
    if cause is not None and not getattr(cause, "schema_errors", None):
        details.append(str(cause))
    return ["; ".join(details)]


class DatadogEmulator(ApiEmulator):
    """Datadog's metric query endpoints, with ``api_key`` / ``app_key`` as its keys."""

    name = "datadog"

    def __init__(self, api_key: str, app_key: str) -> None:
        self.api_key = api_key
        self.app_key = app_key
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._v1 = OpenAPI.from_file_path(str(REFERENCE / "datadog-v1-query.yaml"))
        self._v2 = OpenAPI.from_file_path(str(REFERENCE / "datadog-v2-query.yaml"))
        super().__init__()

    def add_points(self, query: str, points: Iterable[tuple[float, float]]) -> None:
        """Store ``(unix seconds, value)`` points for the metric query ``query``."""
        self.series.setdefault(query, []).extend(points)

    # --- the description ------------------------------------------------------

    def _spec(self, request: Request) -> OpenAPI:
        return self._v2 if request.path.startswith("/api/v2/") else self._v1

    def check_request(self, request: Request) -> list[str]:
        try:
            with warnings.catch_warnings():
                # The description also lists Datadog's OAuth2 scheme, which openapi-core
                # cannot check and warns about; the API keys are checked.
                warnings.simplefilter("ignore", UserWarning)
                self._spec(request).validate_request(WerkzeugOpenAPIRequest(request))
        except SecurityValidationError:
            return []  # missing keys are Datadog's 403, answered below
        except Exception as err:  # openapi-core's error tree has no one root
            return openapi_problems(err)
        return []

    def check_response(self, request: Request, response: Response) -> list[str]:
        try:
            self._spec(request).validate_response(
                WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)
            )
        except Exception as err:
            return openapi_problems(err)
        return []

    # --- the answers ----------------------------------------------------------

    def answer(self, request: Request) -> Response:
        if (
            request.headers.get("DD-API-KEY") != self.api_key
            or request.headers.get("DD-APPLICATION-KEY") != self.app_key
        ):
            return json_response(403, {"errors": ["Forbidden"]})
        if request.path == "/api/v1/query" and request.method == "GET":
            return self._query_v1(request)
        if request.path == "/api/v2/query/scalar" and request.method == "POST":
            return self._query_scalar(request)
        return json_response(404, {"errors": ["Not found"]})

    def _points(self, query: str, start: float, end: float) -> list[tuple[float, float]]:
        return [(t, v) for t, v in self.series.get(query, []) if start <= t <= end]

    def _query_v1(self, request: Request) -> Response:
        query = request.args["query"]
        start, end = int(request.args["from"]), int(request.args["to"])
        if not _QUERY.match(query):
            return json_response(400, {"errors": [f"Error parsing query: {query}"]})
        points = self._points(query, start, end)
        aggregator, _, expression = query.partition(":")
        metric = expression.split("{", 1)[0]
        series = []
        if points:
            series.append(
                {
                    "metric": metric,
                    "display_name": metric,
                    "expression": expression,
                    "scope": expression.split("{", 1)[1].rstrip("}"),
                    "aggr": aggregator,
                    "pointlist": [[t * 1000.0, v] for t, v in points],
                    "start": int(points[0][0] * 1000),
                    "end": int(points[-1][0] * 1000),
                    "interval": 1000,
                    "length": len(points),
                    "query_index": 0,
                    "tag_set": [],
                }
            )
        return json_response(
            200,
            {
                "status": "ok",
                "res_type": "time_series",
                "query": query,
                "from_date": start * 1000,
                "to_date": end * 1000,
                "group_by": [],
                "message": "",
                "series": series,
            },
        )

    def _query_scalar(self, request: Request) -> Response:
        attributes = request.get_json()["data"]["attributes"]
        start, end = attributes["from"] / 1000, attributes["to"] / 1000
        values: dict[str, float | None] = {}
        for query in attributes["queries"]:
            text = query["query"]
            if not _QUERY.match(text):
                return json_response(400, {"errors": [f"Error parsing query: {text}"]})
            points = [v for _, v in self._points(text, start, end)]
            values[query.get("name") or "query1"] = (
                _AGGREGATORS[query["aggregator"]](points) if points else None
            )
        formulas = attributes.get("formulas") or []
        columns = []
        if formulas:
            for formula in formulas:
                try:
                    value = _evaluate(formula["formula"], values)
                except (SyntaxError, KeyError, ZeroDivisionError, TypeError) as err:
                    return json_response(
                        400, {"errors": [f"Error parsing formula: {formula['formula']}: {err}"]}
                    )
                columns.append(_column(formula.get("alias") or formula["formula"], value))
        else:
            columns = [_column(name, value) for name, value in values.items()]
        return json_response(
            200,
            {"data": {"type": "scalar_response", "attributes": {"columns": columns}}},
        )


def _column(name: str, value: float | None) -> dict[str, Any]:
    return {"name": name, "type": "number", "values": [] if value is None else [value]}


def _evaluate(formula: str, values: dict[str, float | None]) -> float | None:
    def walk(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None:
                return None
            return _OPERATORS[type(node.op)](left, right)
        raise SyntaxError(f"unsupported in a formula: {ast.dump(node)[:40]}")

    return walk(ast.parse(formula, mode="eval"))
