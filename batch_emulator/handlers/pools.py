"""Pools and nodes over HTTP."""

from __future__ import annotations

from .. import odata
from ..state.pools import NODE_FIELDS, POOL_FIELDS


# Nodes have no creation sequence to page by: list positions stand in (see _Seq).
_WRAPPED_NODE_FIELDS = {name: (lambda get: lambda w: get(w.item))(get) for name, get in NODE_FIELDS.items()}


class PoolHandlers:
    def create_pool(self, request, body):
        pool = self.backend.create_pool(self.parse_json(body))
        return self.empty(request, 201, etag=pool.etag, modified=pool.modified,
                          data_service_id=f"{self._base()}/pools/{pool.id}")

    def list_pools(self, request, body):
        pools = sorted(self.backend.list_pools(), key=lambda p: p.seq)
        return self.page(request, pools, POOL_FIELDS, self.backend.pool_json, "pools")

    def get_pool(self, request, body):
        with self.backend.lock:
            pool = self.backend.get_pool(request.path_params["poolId"])
            out = odata.select(self.backend.pool_json(pool), odata.parse_select(request.query_params.get("$select")))
        out["odata.metadata"] = f"{self._base()}/$metadata#pools/@Element"
        return self.json(request, out, etag=pool.etag, modified=pool.modified)

    def pool_exists(self, request, body):
        pool = self.backend.get_pool(request.path_params["poolId"])
        return self.empty(request, 200, etag=pool.etag, modified=pool.modified)

    def delete_pool(self, request, body):
        self.backend.delete_pool(request.path_params["poolId"])
        return self.empty(request, 202)

    def resize_pool(self, request, body):
        self.backend.resize_pool(request.path_params["poolId"], self.parse_json(body))
        pool = self.backend.get_pool(request.path_params["poolId"])
        return self.empty(request, 202, etag=pool.etag, modified=pool.modified,
                          data_service_id=f"{self._base()}/pools/{pool.id}/resize")

    def list_nodes(self, request, body):
        nodes = self.backend.list_nodes(request.path_params["poolId"])
        return self.page(request, _Seq.wrap(nodes), _WRAPPED_NODE_FIELDS,
                         lambda w: self.backend.node_json(w.item), "nodes")

    def get_node(self, request, body):
        with self.backend.lock:
            node = self.backend.get_node(request.path_params["poolId"], request.path_params["nodeId"])
            out = self.backend.node_json(node)
        out["odata.metadata"] = f"{self._base()}/$metadata#nodes/@Element"
        return self.json(request, out)


class _Seq:
    """Gives nodes a list position to page by (they have no creation sequence)."""
    __slots__ = ("seq", "item")

    def __init__(self, seq, item):
        self.seq, self.item = seq, item

    @classmethod
    def wrap(cls, items):
        return [cls(i, item) for i, item in enumerate(items, start=1)]

