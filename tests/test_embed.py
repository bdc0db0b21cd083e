"""apps.embed in one process: the error mapping on the failures a real node raises, and a
Runtime started and stopped on a loop and on a thread, with a real LMDB store. (The
adapters run on the real servers in test_examples.py.)"""
from __future__ import annotations

import logging

import pytest
from conftest import arun

from actors import (
    CallExit,
    CallTimeout,
    GenServer,
    Node,
    NoProc,
    NoReply,
    Registry,
    StartError,
    SystemLimit,
)
from apps.embed import HttpErrors, Runtime
from apps.embed.runtime import MAX_WORKERS
from apps.embed.wsgi import NodeThread
from storage import PersistentServer, StorageIOError
from supervision import (
    ChildSpec,
    CircuitOpen,
    DynamicFlags,
    DynamicSupervisor,
    MaxChildren,
    start_child,
)

BOUND = 30.0  # seconds: a safety net on a hung loop, never a measurement


class Server(GenServer):
    def handle_call(self, request, caller):
        if request == "silent":
            return NoReply
        raise RuntimeError("secret customer data")


def raised(node: Node, future) -> BaseException:
    with pytest.raises(Exception) as info:
        node.run_until_complete(future)
    return info.value


def test_each_kernel_failure_gets_its_status_and_a_client_never_sees_the_crash():
    node = Node(seed=1)
    errors = HttpErrors()
    pid = node.spawn(Server, name="server")
    users = Registry(node)

    missing = errors.answer(raised(node, node.call("nobody", "x")))
    assert (missing.status, missing.headers) == (503, {"Retry-After": "1"})
    entity = errors.answer(raised(node, node.call(users.via(("user", "ann")), "x")))
    assert (entity.status, entity.headers) == (404, {})
    late = errors.answer(raised(node, node.call(pid, "silent", timeout=1.0)))
    assert late.status == 504

    crash = raised(node, node.call("server", "boom"))
    assert isinstance(crash, CallExit) and "secret customer data" in str(crash)
    answer = errors.answer(crash)
    assert (answer.status, answer.body) == (500, {"error": "internal error"})
    assert "secret" not in repr(answer)


def test_overload_is_a_503_with_retry_after():
    node = Node(seed=1)
    errors = HttpErrors()
    small = node.spawn(Server, mailbox_limit=1)
    call = node.call(small, "silent")
    node.cast(small, "one too many")  # the mailbox overflows before the server runs
    overflow = raised(node, call)
    assert isinstance(overflow, CallExit)
    limits = [overflow,
              raised(node, start_child(node, node.spawn(DynamicSupervisor, DynamicFlags(max_children=0)),
                                       ChildSpec("w", Server))),
              CircuitOpen("flaky", 12.0)]
    with pytest.raises(SystemLimit) as full:
        Node(seed=1, max_processes=0).spawn(Server)
    limits.append(full.value)
    assert isinstance(limits[1], MaxChildren)
    for exc in limits:
        assert (errors.answer(exc).status, errors.answer(exc).headers) == (503, {"Retry-After": "1"}), exc


def test_the_applications_own_errors_by_class_with_their_message():
    class Refused(ValueError):
        pass

    errors = HttpErrors({ValueError: 400, TimeoutError: 429})
    assert errors.answer(Refused("no such thing")).body == {"error": "no such thing"}
    assert errors.answer(Refused("x" * 500)).message == "x" * 200
    assert errors.answer(TimeoutError()).headers == {"Retry-After": "1"}
    # A listed class wins over the kernel's own meaning (CallTimeout is a TimeoutError).
    assert errors.answer(CallTimeout("server", "get", 5.0)).status == 429
    assert HttpErrors().answer(CallTimeout("server", "get", 5.0)).status == 504
    with pytest.raises(TypeError, match="KeyError"):
        errors.answer(KeyError("not one of them"))
    with pytest.raises(ValueError, match="ValueError must be an int in 400..599, got 200"):
        HttpErrors({ValueError: 200})
    with pytest.raises(TypeError, match="exception classes"):
        HttpErrors({"ValueError": 400})


def test_answers_of_500_and_more_are_logged_for_the_operator(caplog):
    with caplog.at_level(logging.WARNING, logger="apps.embed"):
        HttpErrors().answer(CallExit("server", RuntimeError("boom")))
        HttpErrors().answer(NoProc(Registry(Node(seed=1)).via("ann")))
    assert [r.getMessage() for r in caplog.records] == [
        ("answered 500 to a request that raised CallExit: 'server' exited during the call with "
         "reason RuntimeError('boom')")]


# -- Runtime ---------------------------------------------------------------------------------------

class Counter(PersistentServer):
    def initial_state(self):
        return {"n": 0}

    def handle_call(self, delta, caller):
        self.state["n"] += delta
        return self.state["n"]


class Broken(GenServer):
    def init(self):
        raise RuntimeError("cannot start")


def counter_tree(node, store):
    return [ChildSpec("counter", Counter, args=(store, "counter"), options={"name": "counter"})]


def test_a_runtime_on_the_running_loop_keeps_its_state_across_a_stop_and_a_start(tmp_path):
    runtime = Runtime(counter_tree, tmp_path / "store")

    async def count(delta):
        embedded = await runtime.start()
        try:
            return await embedded.node.call("counter", delta)
        finally:
            await embedded.stop()
            assert embedded.store.closed and not embedded.node.processes()

    assert arun(count(2)) == 2
    assert arun(count(3)) == 5


def test_a_failed_start_undoes_what_started_and_leaves_the_directory_free(tmp_path):
    def tree(node, store):
        return [*counter_tree(node, store), ChildSpec("broken", Broken)]

    with pytest.raises(StartError, match="cannot start"):
        arun(Runtime(tree, tmp_path, store_per_process=True).start())
    with pytest.raises(StartError, match="cannot start"):
        Runtime(tree, tmp_path, store_per_process=True).start_thread()
    embedded = Runtime(counter_tree, tmp_path, store_per_process=True).start_thread()
    try:  # the same directory, so both failed starts closed the store and let go of it
        assert embedded.store.path == str(tmp_path / "worker-0")
        assert embedded.node.call_from_thread("counter", 1) == 1
    finally:
        embedded.stop_thread()


def test_each_process_takes_a_store_directory_of_its_own_and_frees_it_when_stopped(tmp_path):
    runtime = Runtime(counter_tree, tmp_path, store_per_process=True)
    first, second = runtime.start_thread(), runtime.start_thread()
    try:
        assert (first.store.path, second.store.path) == (str(tmp_path / "worker-0"), str(tmp_path / "worker-1"))
        assert first.node.call_from_thread("counter", 5) == 5
        assert second.node.call_from_thread("counter", 1) == 1  # its own state
        first.stop_thread()
        third = runtime.start_thread()  # takes the freed directory, and its state
        assert third.node.call_from_thread("counter", 1) == 6
        third.stop_thread()
    finally:
        second.stop_thread()


def test_store_directories_are_limited(tmp_path, monkeypatch):
    monkeypatch.setattr("apps.embed.runtime.MAX_WORKERS", 2)
    runtime = Runtime(counter_tree, tmp_path, store_per_process=True)
    started = [runtime.start_thread(), runtime.start_thread()]
    try:
        with pytest.raises(RuntimeError, match=f"all 2 store directories under {tmp_path} are held"):
            runtime.start_thread()
    finally:
        for embedded in started:
            embedded.stop_thread()
    assert MAX_WORKERS == 64


@pytest.mark.parametrize("per_process", [False, True])
def test_an_unusable_store_path_is_a_clear_error_and_is_left_as_it_was(tmp_path, per_process):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("not a store")
    with pytest.raises(StorageIOError, match=f"cannot open the store at {not_a_dir}"):
        Runtime(counter_tree, not_a_dir, store_per_process=per_process).start_thread()
    assert not_a_dir.read_text() == "not a store"


def test_a_runtime_with_a_bad_setting_says_which(tmp_path):
    with pytest.raises(ValueError, match="Runtime.mode must be one of"):
        Runtime(counter_tree, tmp_path, mode="fast")
    with pytest.raises(ValueError, match="Runtime.stop_timeout must be positive seconds, got 0"):
        Runtime(counter_tree, tmp_path, stop_timeout=0)
    with pytest.raises(TypeError, match="Runtime.tree must be a function"):
        Runtime([ChildSpec("counter", Counter)], tmp_path)


def test_a_service_tree_is_started_and_reached_as_embedded_service(tmp_path):
    class Service:
        def __init__(self, node, store):
            self.node, self.store, self.started = node, store, False

        def start(self):
            self.pid = self.node.spawn(Counter, self.store, "service")
            self.started = True

        def stop(self):
            return self.node.stop()

    embedded = Runtime(Service, tmp_path).start_thread()
    try:
        assert embedded.service.started and embedded.service.store is embedded.store
        assert embedded.node.call_from_thread(embedded.service.pid, 4) == 4
    finally:
        embedded.stop_thread()


def test_a_node_thread_starts_on_first_use_once_and_again_after_a_stop(tmp_path):
    nodes = NodeThread(Runtime(counter_tree, tmp_path))
    assert not nodes.started  # nothing runs until asked
    assert nodes.node.call_from_thread("counter", 1) == 1 and nodes.started
    assert nodes.node is nodes.node
    nodes.stop()
    assert nodes.node.call_from_thread("counter", 1) == 2  # a new node, the stored state
    nodes.stop()
    nodes.stop()  # a second stop is a no-op
    assert not nodes.started


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_a_starlette_app_reaches_its_node_in_app_state_and_answers_errors(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from apps.embed.asgi import exception_handlers, lifespan

    async def add(request):
        node = request.app.state.letitcrash.node
        return JSONResponse(await node.call(request.path_params["name"], 1))

    app = Starlette(routes=[Route("/{name}", add, methods=["POST"])],
                    lifespan=lifespan(Runtime(counter_tree, tmp_path)),
                    exception_handlers=exception_handlers())
    with TestClient(app) as client:  # runs the lifespan: the node starts, then stops
        assert client.post("/counter").json() == 1
        missing = client.post("/nobody")
        assert (missing.status_code, missing.headers["Retry-After"]) == (503, "1")
        embedded = app.state.letitcrash
    assert embedded.store.closed  # stopped with the app
