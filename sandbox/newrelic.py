"""A New Relic NerdGraph emulator: NRQL queries through ``actor.account(id).nrql(...)``.

``POST /graphql`` runs the request's GraphQL document with graphql-core against
an excerpt of NerdGraph's published schema
(``tests/reference/newrelic-nerdgraph-nrql.graphql``): a document the schema
refuses is answered with GraphQL ``errors`` (as NerdGraph does, status 200) and
kept in :attr:`NerdGraphEmulator.violations`; the answer's ``data`` is
whatever the schema lets execution produce, so it has NerdGraph's shape.

NRQL itself is not interpreted: :meth:`NerdGraphEmulator.set_results` says
what a query (matched exactly) gives; another query starting with ``SELECT``
gives no results, anything else an NRQL syntax error, as NerdGraph reports
one (an error, ``nrql`` null). The ``API-Key`` header must carry the
emulator's key (else 401), the account ID its account (else an error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphql import GraphQLError, build_schema, execute_sync, parse, validate
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import ApiEmulator, json_response

__all__ = ["NerdGraphEmulator"]

SCHEMA = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "reference"
    / "newrelic-nerdgraph-nrql.graphql"
)


class NerdGraphEmulator(ApiEmulator):
    """NerdGraph for one account, ``account_id``, read with ``api_key``."""

    name = "nerdgraph"

    def __init__(self, api_key: str, account_id: int) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.schema = build_schema(SCHEMA.read_text())
        super().__init__()

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def set_results(self, nrql: str, results: list[dict[str, Any]]) -> None:
        """What the NRQL query ``nrql`` returns (NerdGraph's ``results``)."""
        self.results[nrql] = results

    def answer(self, request: Request) -> Response:
        if request.path != "/graphql" or request.method != "POST":
            return json_response(404, {"errors": [{"message": "Not found"}]})
        if request.headers.get("API-Key") != self.api_key:
            return json_response(401, {"errors": [{"message": "Unauthorized"}]})
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            self.record_violation("request", ["the body is not a GraphQL request"])
            return json_response(400, {"errors": [{"message": "Bad request"}]})
        try:
            document = parse(body["query"])
        except GraphQLError as err:
            self.record_violation("request", [err.message])
            return json_response(200, {"errors": [err.formatted]})
        problems = validate(self.schema, document)
        if problems:
            self.record_violation("request", [problem.message for problem in problems])
            return json_response(200, {"errors": [problem.formatted for problem in problems]})
        result = execute_sync(
            self.schema,
            document,
            root_value={"actor": self._actor},
            variable_values=body.get("variables") or {},
        )
        if result.errors and any("Variable" in e.message for e in result.errors):
            self.record_violation("request", [e.message for e in result.errors])
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [error.formatted for error in result.errors]
        return json_response(200, answer)

    # --- resolvers (graphql-core's default resolver calls callables with info and args) ---

    def _actor(self, info: Any) -> dict[str, Any]:
        return {"account": self._account}

    def _account(self, info: Any, id: int) -> dict[str, Any]:
        if id != self.account_id:
            raise GraphQLError(f"Account {id} not found or not accessible")
        return {"id": id, "name": "emulated", "nrql": self._nrql}

    def _nrql(self, info: Any, query: str, **arguments: Any) -> dict[str, Any]:
        if query in self.results:
            results = self.results[query]
        elif query.strip().upper().startswith("SELECT"):
            results = []
        else:
            raise GraphQLError(
                f"NRQL Syntax Error: Error at line 1 position 1, unexpected '{query[:20]}'"
            )
        return {"nrql": query, "results": results}
