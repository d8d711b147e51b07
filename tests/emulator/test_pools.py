"""Pools and nodes through the SDK: create, get, exists, list, resize, delete, errors.

Sources: BatchService.json ("the spec": ids, Pools_PoolExists's 404, resize only
when steady, else 409) and Microsoft's "Batch status and error codes" (PoolExists,
PoolNotFound, MissingRequiredProperty, InvalidPropertyValue). The 409's code
PoolNotSteady is the emulator's own choice (batch_emulator/README.md)."""

import pytest
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from .conftest import pool_options, unique, wait_for, wait_pool_steady


def test_pool_create_get_exists_list_nodes(client):
    pool_id = unique("pool")
    client.create_pool(pool_options(pool_id, dedicated=2, low=1, slots=3))
    pool = client.get_pool(pool_id)
    assert pool.id == pool_id and pool.state == bm.BatchPoolState.ACTIVE
    assert pool.vm_size == "standard_d2s_v3" and pool.task_slots_per_node == 3
    assert pool.virtual_machine_configuration.container_configuration.type == "dockerCompatible"
    pool = wait_pool_steady(client, pool_id)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (2, 1)
    assert client.pool_exists(pool_id) is True
    assert client.pool_exists(pool_id.upper()) is True          # ids are case-insensitive
    assert pool_id in [p.id for p in client.list_pools()]
    assert [p.id for p in client.list_pools(filter=f"id eq '{pool_id}'")] == [pool_id]
    nodes = list(client.list_nodes(pool_id))
    assert len(nodes) == 3
    assert sorted(n.is_dedicated for n in nodes) == [False, True, True]
    assert {n.state for n in nodes} == {bm.BatchNodeState.IDLE}
    client.begin_delete_pool(pool_id, polling_interval=0.05).result()


def test_pool_exists_false_is_a_404(client):
    # The service answers 404; azure-batch 15.1 turns that into an exception
    # rather than False (its error policy runs before pool_exists looks).
    with pytest.raises(ResourceNotFoundError):
        client.pool_exists(unique("missing"))


def test_pool_errors(client):
    pool_id = unique("pool")
    client.create_pool(pool_options(pool_id, dedicated=0))
    with pytest.raises(ResourceExistsError) as info:
        client.create_pool(pool_options(pool_id.upper(), dedicated=0))
    assert info.value.error.code == "PoolExists"
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_pool(unique("nope"))
    assert info.value.error.code == "PoolNotFound"
    with pytest.raises(HttpResponseError) as info:
        client.create_pool(pool_options("bad id!", dedicated=0))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidPropertyValue"
    with pytest.raises(HttpResponseError) as info:
        client.create_pool(bm.BatchPoolCreateOptions(id=unique("pool"), vm_size="standard_d2s_v3"))
    assert info.value.status_code == 400 and info.value.error.code == "MissingRequiredProperty"
    details = {d.code: d.message for d in info.value.error.details}
    assert details == {"PropertyName": "virtualMachineConfiguration"}
    opts = pool_options(unique("pool"), dedicated=0)
    opts.virtual_machine_configuration.container_configuration.type = "podman"
    with pytest.raises(HttpResponseError) as info:
        client.create_pool(opts)
    assert info.value.error.code == "InvalidPropertyValue"
    client.begin_delete_pool(pool_id, polling_interval=0.05).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)


def test_resize_grows_and_shrinks(client):
    pool_id = unique("pool")
    client.create_pool(pool_options(pool_id, dedicated=1))
    wait_pool_steady(client, pool_id)
    client.begin_resize_pool(pool_id, bm.BatchPoolResizeOptions(target_dedicated_nodes=3, target_low_priority_nodes=2),
                             polling_interval=0.05).result()
    pool = wait_pool_steady(client, pool_id)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (3, 2)
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (3, 2)
    client.begin_resize_pool(pool_id, bm.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=0),
                             polling_interval=0.05).result()
    wait_for(lambda: len(list(client.list_nodes(pool_id))) == 1, what="nodes removed")
    client.begin_delete_pool(pool_id, polling_interval=0.05).result()


def test_resize_while_resizing_is_refused():
    # A slow start-up keeps the pool in 'resizing' long enough to see the rule.
    from tests.support.servers import start_batch_emulator

    with start_batch_emulator(node_startup_delay=2.0) as slow, slow.client() as c:
        c.create_pool(pool_options("p1", dedicated=1))
        assert c.get_pool("p1").allocation_state == bm.AllocationState.RESIZING
        assert c.list_nodes("p1").next().state in (bm.BatchNodeState.CREATING, bm.BatchNodeState.STARTING)
        with pytest.raises(ResourceExistsError) as info:
            c.begin_resize_pool("p1", bm.BatchPoolResizeOptions(target_dedicated_nodes=2))
        assert info.value.error.code == "PoolNotSteady"


def test_supported_images_and_their_filter(client):
    # The table and its values are the service's recorded answer (batch_emulator/state/images.py);
    # the filterable properties are those "OData filters in Batch" lists for this operation.
    images = list(client.list_supported_images())
    by_sku = {i.image_reference.sku: i for i in images if i.image_reference.offer == "ubuntu-hpc"}
    assert by_sku["2404"].node_agent_sku_id == "batch.node.ubuntu 24.04"
    assert by_sku["2204"].node_agent_sku_id == "batch.node.ubuntu 22.04"
    assert all("DockerCompatible" in i.capabilities for i in by_sku.values())
    verified = list(client.list_supported_images(filter="verificationType eq 'verified'"))
    assert [i.image_reference.sku for i in verified] == ["2404"]
    assert list(client.list_supported_images(filter="nodeAgentSKUId eq 'batch.node.ubuntu 22.04'"))[0] \
        .image_reference.sku == "2204"
    with pytest.raises(HttpResponseError) as info:
        list(client.list_supported_images(filter="sku eq '2404'"))
    assert info.value.error.code == "InvalidQueryParameterValue"
