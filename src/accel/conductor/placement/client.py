"""Placement's API as the reconciliation uses it, over a keystoneauth1 Adapter.

Every call is at one fixed microversion, has the adapter's timeout and bounded
retries (``accel.openstack.credentials``), and is counted in
``accel_placement_calls_total{method,outcome}``. An answer that is not what the API
promises (a wrong status, a body that is not the JSON it should be) is an error
like a transport failure: the node's report stays pending, never half believed.
Blocking (keystoneauth is built on requests): the loop runs it in worker threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1.adapter import Adapter
from requests import Response

from accel.metrics import PLACEMENT_CALLS
from accel.openstack.bounded_http import PastDeadline
from accel.web.json_bodies import loads

# 1.14 nests providers, 1.20 answers a POST with the provider, 1.26 allows
# reserved == total; every Placement since Rocky (2018) speaks it.
MICROVERSION = "1.26"


class PlacementError(Exception):
    """Placement did not do what was asked; the report is tried again later."""


class PlacementUnreachable(PlacementError):
    """No answer from Placement (refused, timed out) after the adapter's retries."""


class ReportExpired(PlacementUnreachable):
    """The report's lease ran out (``bounded_http.calls_until``): no more calls."""


class GenerationConflict(PlacementError):
    """409: the provider changed since its generation was read, or is in use."""


@dataclass(frozen=True)
class Provider:
    uuid: str
    name: str
    generation: int
    parent: str | None


def _outcome(status: int) -> str:
    if status < 300:
        return "ok"
    if status == 409:
        return "conflict"
    if status == 404:
        return "not_found"
    return "refused" if status < 500 else "error"


class PlacementClient:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        # Custom resource classes and traits known to exist: made once per process.
        self._known: set[str] = set()
        self._lock = threading.Lock()
        # Held while names are made: reports running side by side make each once.
        self._making = threading.Lock()
        self.calls = 0

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        params: dict[str, str] | None = None,
    ) -> Response:
        with self._lock:
            self.calls += 1
        try:
            response = self.adapter.request(
                path, method, json=body, params=params, microversion=MICROVERSION, raise_exc=False
            )
        except ks_exceptions.ClientException as exc:
            PLACEMENT_CALLS.labels(method, "unreachable").inc()
            raise PlacementUnreachable(f"{method} {path}: {exc}") from exc
        except PastDeadline as exc:
            raise ReportExpired(f"{method} {path}: not sent, the report's lease ran out") from exc
        except RecursionError as exc:
            # Keystone's token answer nested past what json reads (keystoneauth parses it).
            PLACEMENT_CALLS.labels(method, "unreachable").inc()
            raise PlacementUnreachable(f"{method} {path}: an answer nested too deep") from exc
        PLACEMENT_CALLS.labels(method, _outcome(response.status_code)).inc()
        if response.status_code in expect:
            return response
        detail = f"{method} {path}: {response.status_code} {response.text[:300]}"
        if response.status_code == 409:
            raise GenerationConflict(detail)
        raise PlacementError(detail)

    @staticmethod
    def _json(response: Response, key: str | None = None) -> Any:
        try:
            # accel's one JSON reader for peers: bounded depth (json's own recursion
            # would raise RecursionError on a document nested a hundred thousand deep).
            document = loads(response.content)
            return document if key is None else document[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise PlacementError(
                f"{response.request.method} {response.url}: not the answer Placement gives "
                f"({str(exc)[:200]})"
            ) from exc

    @staticmethod
    def _provider(document: Any) -> Provider:
        try:
            return Provider(
                uuid=str(document["uuid"]),
                name=str(document["name"]),
                generation=int(document["generation"]),
                parent=document.get("parent_provider_uuid"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlacementError(f"a provider Placement described oddly: {exc}") from exc

    def find_root(self, name: str) -> Provider | None:
        """The provider named ``name`` (nova-compute's for the node), if there is one."""
        response = self._call("GET", "/resource_providers", params={"name": name})
        found = self._json(response, "resource_providers")
        if not isinstance(found, list):
            raise PlacementError("GET /resource_providers: not a list of providers")
        return self._provider(found[0]) if found else None

    def tree(self, root: str) -> dict[str, Provider]:
        """Every provider in the tree of ``root``, by uuid."""
        response = self._call("GET", "/resource_providers", params={"in_tree": root})
        found = self._json(response, "resource_providers")
        if not isinstance(found, list):
            raise PlacementError("GET /resource_providers: not a list of providers")
        providers = [self._provider(document) for document in found]
        return {provider.uuid: provider for provider in providers}

    def provider(self, uuid: str) -> Provider | None:
        response = self._call("GET", f"/resource_providers/{uuid}", expect=(200, 404))
        return None if response.status_code == 404 else self._provider(self._json(response))

    def create(self, uuid: str, name: str, parent: str) -> Provider:
        body = {"uuid": uuid, "name": name, "parent_provider_uuid": parent}
        return self._provider(self._json(self._call("POST", "/resource_providers", body)))

    def rename(self, provider: Provider, name: str) -> int:
        body = {"name": name, "parent_provider_uuid": provider.parent}
        response = self._call("PUT", f"/resource_providers/{provider.uuid}", body)
        return self._provider(self._json(response)).generation

    def inventories(self, uuid: str) -> tuple[int, dict[str, dict[str, int]]]:
        """The provider's generation and inventory as ``{rc: {total, max_unit, reserved}}``."""
        document = self._json(self._call("GET", f"/resource_providers/{uuid}/inventories"))
        try:
            return int(document["resource_provider_generation"]), {
                rc: {key: int(fields[key]) for key in ("total", "max_unit", "reserved")}
                for rc, fields in document["inventories"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlacementError(f"an inventory Placement described oddly: {exc}") from exc

    def put_inventories(
        self, uuid: str, generation: int, inventories: dict[str, dict[str, int]]
    ) -> int:
        body = {"resource_provider_generation": generation, "inventories": inventories}
        response = self._call("PUT", f"/resource_providers/{uuid}/inventories", body)
        return self._generation(response)

    def traits(self, uuid: str) -> tuple[int, set[str]]:
        document = self._json(self._call("GET", f"/resource_providers/{uuid}/traits"))
        try:
            return int(document["resource_provider_generation"]), set(document["traits"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PlacementError(f"traits Placement described oddly: {exc}") from exc

    def put_traits(self, uuid: str, generation: int, traits: tuple[str, ...]) -> int:
        body = {"resource_provider_generation": generation, "traits": list(traits)}
        return self._generation(self._call("PUT", f"/resource_providers/{uuid}/traits", body))

    def delete(self, uuid: str) -> None:
        """Deletes a provider; one already gone is fine. 409: allocations hold it."""
        self._call("DELETE", f"/resource_providers/{uuid}", expect=(204, 404))

    def ensure_custom(self, resource_classes: set[str], traits: set[str]) -> None:
        """Creates the custom resource classes and traits Placement may not know yet;
        standard ones (``os-resource-classes``, ``os-traits``) exist already."""
        with self._making:
            self._make(resource_classes, traits)

    def _make(self, resource_classes: set[str], traits: set[str]) -> None:
        for name in sorted(resource_classes):
            if name.startswith("CUSTOM_") and f"rc:{name}" not in self._known:
                self._call("PUT", f"/resource_classes/{name}", expect=(201, 204))
                self._known.add(f"rc:{name}")
        for name in sorted(traits):
            if name.startswith("CUSTOM_") and f"trait:{name}" not in self._known:
                self._call("PUT", f"/traits/{name}", expect=(201, 204))
                self._known.add(f"trait:{name}")

    def forget_custom(self) -> None:
        """After a refusal that a class or trait deleted behind accel's back may explain."""
        self._known.clear()

    def _generation(self, response: Response) -> int:
        try:
            return int(self._json(response, "resource_provider_generation"))
        except (TypeError, ValueError) as exc:
            raise PlacementError(f"a generation Placement gave oddly: {exc}") from exc
