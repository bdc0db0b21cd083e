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
