"""The base every case-study service shares (`apps.common.TreeService`)."""
import pytest

from actors import Node, NoProc
from apps.rides import RideService
from apps.video import VideoService
from storage import Store


@pytest.mark.parametrize("make, child", [(RideService, "rides.city"), (VideoService, "video.catalog")])
def test_a_tree_service_answers_noproc_until_started_and_starts_once_at_a_time(tmp_path, make, child):
    node = Node(seed=1)
    store = Store(str(tmp_path), node)
    service = make(node, store)
    with pytest.raises(NoProc):
        service.pid(child)
    top = service.start()
    assert node.whereis(service.name) == top and service.running
    assert node.whereis(child) == service.pid(child)
    with pytest.raises(RuntimeError, match="already running"):
        service.start()
    node.run_until_complete(service.stop())
    assert not service.running
    service.start()  # again, after a stop
    assert service.running
    store.close()


def test_server_nodes_tell_the_crash_hook_and_refuse_while_the_node_is_down(tmp_path):
    from types import SimpleNamespace

    from apps.common import ServerNodes
    from sim.core import Simulation

    sim = Simulation(1)
    crashes = []
    nodes = ServerNodes(SimpleNamespace(sim=sim, data_dir=tmp_path), ["city"],
                        lambda node, store, resolve: RideService(node, store),
                        on_crash=lambda name, power_loss: crashes.append((name, power_loss)))
    nodes.add()
    first = nodes.serving("city")
    assert first.running
    sim.crash_node("city", power_loss=True)
    assert crashes == [("city", True)]
    with pytest.raises(NoProc):
        nodes.serving("city")
    sim.restart_node("city")
    assert nodes.serving("city") is not first and nodes.serving("city").running
    sim.close()
    nodes.close()
