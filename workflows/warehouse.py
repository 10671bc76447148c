"""The ``Warehouse`` workflow: one per Warehouse, discovering artifacts and making Freight.

Loop: run the ``discover_warehouse`` activity over every subscription, turn
the result into Freight with :func:`freightline.contracts.warehouse.decide_freight`,
record it (bounded, newest first) and tell the Stages that request Freight
from this Warehouse directly (``freight_available`` signal). Then sleep for
the Warehouse's ``interval`` or until the ``refresh`` signal, whichever comes
first. An ``interval`` of ``0`` means refresh-only.

A failed discovery (bad regex or constraint, unknown registry, missing
repository, a registry that keeps timing out after a few attempts) is
recorded as ``last_error`` on the ``status`` query and the workflow's
current details; the loop goes on and the Freight already made is kept.

``freightline apply`` starts it with update-with-start of ``update_spec``
(the Warehouse and the Stages to tell); re-applying an unchanged Warehouse
changes nothing. It continues as new when Temporal suggests it, carrying
its Freight, the NewestBuild date cache and its status.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.discovery import DiscoveryActivities
    from freightline.contracts.metadata import (
        SET_FREIGHT_ALIAS_UPDATE,
        SET_FREIGHT_METADATA_UPDATE,
        FreightAliasChange,
        FreightMetadataChange,
        with_alias,
        with_metadata,
    )
    from freightline.contracts.metrics import record_discovery
    from freightline.contracts.names import (
        ASSEMBLE_UPDATE,
        FREIGHT_AVAILABLE_SIGNAL,
        FREIGHT_NAMED_QUERY,
        FREIGHT_QUERY,
        REFRESH_SIGNAL,
        SA_PROJECT,
        SA_WAREHOUSE,
        stage_workflow_id,
    )
    from freightline.contracts.stage import FreightAvailable
    from freightline.contracts.stage_requests import RetireRequest
    from freightline.contracts.warehouse import (
        AssembleRequest,
        DiscoveryRequest,
        DiscoveryResult,
        WarehouseConfig,
        WarehouseInput,
        WarehouseState,
        WarehouseStatus,
        assemble_freight,
        continue_as_new_input,
        decide_freight,
        record_freight,
        remember_created,
    )
    from freightline.errors import (
        FreightlineError,
        RequestRefused,
        diagnose,
        refusing,
        to_application_error,
    )
    from freightline.kargo.resources import Freight, parse_duration
    from workflows.options import discovery_options


@workflow.defn(name="Warehouse")
class WarehouseWorkflow:
    """Discovers on an interval or on ``refresh``; holds the Warehouse's Freight."""

    @workflow.init
    def __init__(self, input: WarehouseInput) -> None:
        self.project = input.project
        self.config = input.config
        self.state = input.state
        self.refresh_requested = input.refresh
        self.retiring: RetireRequest | None = None

    @workflow.run
    async def run(self, input: WarehouseInput) -> None:
        workflow.upsert_search_attributes(
            [SA_PROJECT.value_set(self.project), SA_WAREHOUSE.value_set(self.name)]
        )
        self._show()
        while True:
            if self.refresh_requested and self.retiring is None:
                self.refresh_requested = False
                await self._discover()
            if self.retiring is not None:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self.retiring is not None:
                    workflow.logger.info("warehouse retired", extra={"warehouse": self.name})
                    return
                continue
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    continue_as_new_input(self.project, self.config, self.state)
                )
            try:
                await workflow.wait_condition(
                    lambda: (
                        self.refresh_requested
                        or self.retiring is not None
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=self.interval,
                )
            except TimeoutError:
                self.refresh_requested = True

    @property
    def name(self) -> str:
        return self.config.warehouse.metadata.name

    @property
    def interval(self) -> timedelta | None:
        interval = parse_duration(self.config.warehouse.spec.interval)
        return interval if interval > timedelta(0) else None

    # -- messages --

    @workflow.signal(name=REFRESH_SIGNAL)
    def refresh(self) -> None:
        """Discover now."""
        self.refresh_requested = True

    @workflow.update(name="update_spec")
    def update_spec(self, config: WarehouseConfig) -> bool:
        """Take a re-applied Warehouse (and its Stages); True when anything changed."""
        if self.retiring is not None:  # applied again before it ended
            self.retiring = None
        if config == self.config:
            return False
        if config.warehouse.spec != self.config.warehouse.spec:
            self.refresh_requested = True
        self.config = config
        self._show()
        return True

    @workflow.update(name="retire")
    def retire(self, request: RetireRequest) -> str:
        """The Warehouse left its project: end after the current discovery."""
        self.retiring = self.retiring or request
        self._show()
        return f'Warehouse "{self.name}" retiring: {request.reason}'

    @update_spec.validator
    def validate_update_spec(self, config: WarehouseConfig) -> None:
        if config.warehouse.metadata.name != self.name:
            raise to_application_error(
                RequestRefused(
                    f'Warehouse "{config.warehouse.metadata.name}" sent to Warehouse "{self.name}"'
                )
            )

    @workflow.update(name=ASSEMBLE_UPDATE)
    async def assemble(self, request: AssembleRequest) -> Freight:
        """Make Freight from discovered artifacts a person picked (Kargo's manual Freight).

        The validator refuses a bad pick before anything is recorded; Freight
        already held is returned as it is, announced once.
        """
        freight = self._assembled(request)
        if any(f.metadata.name == freight.metadata.name for f in self.state.freight):
            return next(f for f in self.state.freight if f.metadata.name == freight.metadata.name)
        self.state = self.state.model_copy(
            update={
                "freight": record_freight(self.state.freight, freight),
                "message": f"{request.user} assembled Freight {freight.alias}",
            }
        )
        workflow.logger.info("freight assembled", extra={"freight": freight.alias})
        self._show()
        await self._announce(freight)
        return freight

    @assemble.validator
    def validate_assemble(self, request: AssembleRequest) -> None:
        with refusing():
            self._assembled(request)

    def _assembled(self, request: AssembleRequest) -> Freight:
        return assemble_freight(
            self.project,
            self.config.warehouse,
            self.state.discovered,
            self.state.freight,
            workflow.now(),
            request.picks,
        )

    @workflow.update(name=SET_FREIGHT_ALIAS_UPDATE)
    def set_freight_alias(self, change: FreightAliasChange) -> Freight:
        """Kargo's ``set-freight-alias`` on Freight this Warehouse holds; the Freight after.
        The validator refuses an alias another of its Freight holds, naming that Freight."""
        held, renamed = with_alias(self.state.freight, change, self.project)
        self.state = self.state.model_copy(update={"freight": held})
        self._show()
        return renamed

    @set_freight_alias.validator
    def validate_set_freight_alias(self, change: FreightAliasChange) -> None:
        with refusing():
            with_alias(self.state.freight, change, self.project)

    @workflow.update(name=SET_FREIGHT_METADATA_UPDATE)
    def set_freight_metadata(self, change: FreightMetadataChange) -> Freight:
        """Kargo's ``set-metadata`` on Freight this Warehouse holds: upsert the keys of its
        ``status.metadata``; the Freight after."""
        held, annotated = with_metadata(self.state.freight, change, self.project)
        self.state = self.state.model_copy(update={"freight": held})
        return annotated

    @set_freight_metadata.validator
    def validate_set_freight_metadata(self, change: FreightMetadataChange) -> None:
        with refusing():
            with_metadata(self.state.freight, change, self.project)

    @workflow.query(name=FREIGHT_QUERY)
    def freight(self) -> list[Freight]:
        """This Warehouse's Freight, newest first."""
        return list(self.state.freight)

    @workflow.query(name=FREIGHT_NAMED_QUERY)
    def freight_named(self, names: list[str]) -> list[Freight]:
        """This Warehouse's Freight with these IDs or aliases, newest first."""
        wanted = set(names)
        return [f for f in self.state.freight if f.metadata.name in wanted or f.alias in wanted]

    @workflow.query(name="status")
    def status(self) -> WarehouseStatus:
        state = self.state
        return WarehouseStatus(
            project=self.project,
            warehouse=self.name,
            interval=self.config.warehouse.spec.interval,
            last_discovery=state.last_discovery,
            last_error=state.last_error,
            message=state.message,
            freight_count=len(state.freight),
            latest_freight=state.freight[0].alias if state.freight else None,
            discoveries=state.discoveries,
            failures=state.failures,
            stages=self.config.stages,
        )

    @workflow.query(name="config")
    def current_config(self) -> WarehouseConfig:
        return self.config

    @workflow.query(name="discovered")
    def discovered(self) -> DiscoveryResult | None:
        """The artifacts the last successful discovery found (for Manual Freight)."""
        return self.state.discovered

    # -- the work --

    async def _discover(self) -> None:
        warehouse = self.config.warehouse
        request = DiscoveryRequest(
            project=self.project,
            warehouse=self.name,
            subscriptions=tuple(warehouse.spec.subscriptions),
            known_created=self.state.known_created,
        )
        now = workflow.now()
        try:
            result = await workflow.execute_activity_method(
                DiscoveryActivities.discover_warehouse,
                request,
                **discovery_options(
                    f"discover {len(warehouse.spec.subscriptions)} subscriptions of "
                    f"warehouse `{self.name}`"
                ),
            )
            decision = decide_freight(self.project, warehouse, result, self.state.freight, now)
        except ActivityError as err:
            self._failed(now, diagnose(err).reason)
            return
        except FreightlineError as err:
            self._failed(now, str(err))
            return
        state = self.state.model_copy(
            update={
                "last_discovery": now,
                "last_error": None,
                "message": decision.message,
                "discovered": result,
                "discoveries": self.state.discoveries + 1,
                "known_created": remember_created(self.state.known_created, result),
            }
        )
        if decision.freight is not None:
            state = state.model_copy(
                update={"freight": record_freight(state.freight, decision.freight)}
            )
        self.state = state
        self._show()
        record_discovery(
            self.project,
            self.name,
            (workflow.now() - now).total_seconds(),
            new_freight=0 if decision.freight is None else 1,
        )
        if decision.freight is not None:
            await self._announce(decision.freight)

    def _failed(self, now: datetime, message: str) -> None:
        workflow.logger.warning("discovery failed: %s", message)
        record_discovery(
            self.project, self.name, (workflow.now() - now).total_seconds(), error=True
        )
        self.state = self.state.model_copy(
            update={
                "last_discovery": now,
                "last_error": message,
                "message": "discovery failed; earlier Freight kept",
                "discoveries": self.state.discoveries + 1,
                "failures": self.state.failures + 1,
            }
        )
        self._show()

    async def _announce(self, freight: Freight) -> None:
        """Signal every Stage that takes this Warehouse's Freight directly."""
        offer = FreightAvailable(freight=freight, source="warehouse", via=self.name)
        for stage in self.config.stages:
            handle = workflow.get_external_workflow_handle(stage_workflow_id(self.project, stage))
            try:
                await handle.signal(FREIGHT_AVAILABLE_SIGNAL, offer)
            except FailureError as err:
                # A Stage not started yet asks its Warehouses (the `freight` query) when it starts.
                workflow.logger.info("stage %s not told of %s: %s", stage, freight.alias, err)

    def _show(self) -> None:
        state = self.state
        newest = f"newest `{state.freight[0].alias}`" if state.freight else "no freight yet"
        when = (
            state.last_discovery.strftime("%Y-%m-%d %H:%M:%SZ") if state.last_discovery else "never"
        )
        details = (
            f"warehouse `{self.name}` (project `{self.project}`): {len(state.freight)} freight, "
            f"{newest}; last discovery {when}: {state.message or 'pending'}"
        )
        if state.last_error:
            details += f"\n\nlast error: {state.last_error}"
        if self.retiring is not None:
            details += f"\n\nretiring: {self.retiring.reason}"
        workflow.set_current_details(details)


__all__ = ["WarehouseState", "WarehouseWorkflow"]
