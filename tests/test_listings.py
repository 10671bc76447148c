"""``get ... -o json``: the scriptable contract keeps IDs, digests, origins and times whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from freightline.app.listings import freight_listing, promotion_listing
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32


def test_freight_keeps_full_commit_ids_digests_origin_and_time() -> None:
    freight = Freight.model_validate(
        {
            "origin": {"kind": "Warehouse", "name": "app"},
            "images": [{"repoURL": "ghcr.io/acme/app", "tag": "1.2.3", "digest": DIGEST}],
            "commits": [
                {"repoURL": "https://github.com/acme/gitops", "id": COMMIT, "branch": "main"}
            ],
            "charts": [{"repoURL": "oci://ghcr.io/acme/charts", "name": "app", "version": "0.1.0"}],
            "discoveredAt": "2026-12-02T12:00:00Z",
        }
    )
    name = freight_id(freight)
    freight = freight.model_copy(
        update={
            "metadata": freight.metadata.model_copy(update={"name": name}),
            "alias": freight_alias(name),
        }
    )
    listing = json.loads(json.dumps(freight_listing(freight)))  # what the CLI prints, parsed
    assert listing["id"] == name and len(name) == 40
    assert listing["alias"] == freight.alias
    assert listing["origin"] == {"kind": "Warehouse", "name": "app"}
    assert listing["images"] == [{"repoURL": "ghcr.io/acme/app", "tag": "1.2.3", "digest": DIGEST}]
    assert listing["commits"][0]["id"] == COMMIT
    assert listing["charts"][0]["version"] == "0.1.0"
    assert datetime.fromisoformat(listing["discoveredAt"]) == datetime(2026, 12, 2, 12, tzinfo=UTC)
    assert Freight.model_validate(listing["freight"]) == freight


def test_promotion_times_are_iso_and_absent_values_null() -> None:
    started = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
    row = {"id": "promotion:p:s:a:1", "runId": "r", "status": "RUNNING", "project": "p"}
    listing = promotion_listing({**row, "freight": None, "started": started, "closed": None})
    assert listing == {
        **row,
        "freight": None,
        "started": "2026-12-02T12:00:00.123456+00:00",
        "closed": None,
    }
