"""Autoscale over HTTP: enable, disable, evaluate (state in state/autoscale.py).

Answers as recorded (python azure-batch test_batch_scale_pools): enable and
disable are 200 with no body and the pool's ETag; evaluate is 200 with an
AutoScaleRun.
"""

from __future__ import annotations


class AutoscaleHandlers:
    def enable_autoscale(self, request, body):
        pool_id = request.path_params["poolId"]
        self.backend.enable_autoscale(pool_id, self.parse_json(body))
        return self._pool_answer(request, pool_id, "enableautoscale")

    def disable_autoscale(self, request, body):
        pool_id = request.path_params["poolId"]
        self.backend.disable_autoscale(pool_id)
        return self._pool_answer(request, pool_id, "disableautoscale")

    def evaluate_autoscale(self, request, body):
        pool_id = request.path_params["poolId"]
        run = self.backend.evaluate_autoscale(pool_id, self.parse_json(body))
        out = {"odata.metadata": f"{self._base()}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun",
               **run}
        return self.json(request, out, data_service_id=f"{self._base()}/pools/{pool_id}/evaluateautoscale")

    def _pool_answer(self, request, pool_id, what):
        pool = self.backend.get_pool(pool_id)
        return self.empty(request, 200, etag=pool.etag, modified=pool.modified,
                          data_service_id=f"{self._base()}/pools/{pool.id}/{what}")
