"""Flavors, engines and the training event categories as the API lists them."""

from __future__ import annotations

from typing import Any

from openarts.core import errors
from openarts.core.notify import CATEGORIES, DEFAULT_EVENTS
from openarts.core.resources import Catalog
from openarts.service.document import flavor_info


class CatalogService:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def flavors(self, flavor_type: str | None) -> dict[str, Any]:
        _check_flavor_type(flavor_type)
        items = []
        for pool in sorted(self.catalog.pools()):
            for f in self.catalog.flavors.values():
                if flavor_type and f.flavor_type != flavor_type:
                    continue
                max_num = self.catalog.max_num(f, pool)
                if max_num == 0:
                    continue
                item: dict[str, Any] = {
                    "pool_id": pool, "flavor_id": f.flavor_id, "flavor_type": f.flavor_type, "max_num": max_num,
                    # a string in the SDK's model: the engine ids, comma-separated
                    "support_engines": ",".join(sorted(self.catalog.engines)),
                    "flavor_info": flavor_info(f, max_num),
                }
                if f.flavor_name:
                    item["flavor_name"] = f.flavor_name
                items.append(item)
        return {"total_count": len(items), "flavors": items}

    def engines(self) -> dict[str, Any]:
        # v1_compatible and run_user do not apply (no v1 jobs); image_info only for an engine that is an
        # image: a worker of an engine without one runs the host's interpreter in the sandbox
        items = []
        for e in self.catalog.engines.values():
            item: dict[str, Any] = {"engine_id": e.engine_id, "engine_name": e.engine_name,
                                    "engine_version": e.engine_version}
            if e.image_url:
                item["image_info"] = {"cpu_image_url": e.image_url, "gpu_image_url": e.image_url,
                                      "image_version": e.image_url.rsplit(":", 1)[-1] if ":" in
                                      e.image_url.rsplit("/", 1)[-1] else "latest"}
            items.append(item)
        return {"total": len(items), "items": items}

    @staticmethod
    def event_categories(flavor_type: str | None) -> dict[str, Any]:
        """The training event categories (core/notify.py CATEGORIES): the events a job's spec.notification
        may name, each announced when it happens. `notification`: whether a notification that names no
        events announces it (DEFAULT_EVENTS). No category depends on the flavor type here (a hang is
        no output and no CPU progress, whatever the flavor), so `flavor_type` is only checked."""
        _check_flavor_type(flavor_type)
        return {"event-categories": [{"id": c.id, "name": c.id, "description": c.description,
                                      "notification": c.id in DEFAULT_EVENTS} for c in CATEGORIES]}


def _check_flavor_type(flavor_type: str | None) -> None:
    if flavor_type and flavor_type not in ("CPU", "GPU", "Ascend"):
        raise errors.QueryParamsError("flavor_type must be CPU, GPU or Ascend.")
