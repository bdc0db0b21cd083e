"""Registries: unique and duplicate keys, values, dispatch, partitions, cleanup on exit."""
import pytest

from actors import AlreadyRegistered, GenServer, Node, NoProc, Registry, SystemLimit


class Sub(GenServer):
    def init(self):
        self.got = []

    def handle_info(self, msg):
        self.got.append(msg)

    def handle_cast(self, msg):
        self.stop(msg)


def test_a_unique_key_holds_one_process_and_its_value():
    node = Node(seed=1)
    users = Registry(node, "users")
    a, b = node.spawn(Sub), node.spawn(Sub)
    users.register("alice", a, {"device": "phone"})
    with pytest.raises(AlreadyRegistered):
        users.register("alice", b)
    assert users.lookup("alice") == a and users.entries("alice") == [(a, {"device": "phone"})]
    users.unregister("alice", b)  # not its holder: nothing happens
    assert users.lookup("alice") == a
    node.cast(a, "normal")
    node.run()
    assert users.lookup("alice") is None and users.entries("alice") == [] and len(users) == 0
    users.register("alice", b)  # the key, and no stale value, for the next holder
    assert users.entries("alice") == [(b, None)]


def test_duplicate_keys_take_many_entries_each_with_its_value():
    node = Node(seed=1)
    topics = Registry(node, "topics", keys="duplicate")
    a, b = node.spawn(Sub), node.spawn(Sub)
    topics.register("news", a, 1)
    topics.register("news", b, 2)
    topics.register("news", a, 3)  # a process may register a key again
    topics.register("sport", b)
    assert topics.lookup("news") == [(a, 1), (a, 3), (b, 2)]
    assert topics.keys(a) == ["news", "news"] and topics.keys(b) == ["news", "sport"]
    assert len(topics) == 4
    topics.unregister("news", a)
    assert topics.lookup("news") == [(b, 2)] and topics.keys(a) == [] and len(topics) == 2


def test_dispatch_publishes_by_key_once_per_partition():
    node = Node(seed=1)
    topics = Registry(node, "topics", keys="duplicate", partitions=4)
    subs = [node.spawn(Sub) for _ in range(10)]
    for n, pid in enumerate(subs):
        topics.register("news", pid, n)
    calls = []
    topics.dispatch("news", lambda entries: calls.append(entries) or [node.send(p, ("news", v)) for p, v in entries])
    topics.dispatch("nothing", calls.append)
    node.run()
    assert len(calls) == 4  # pids 1..10 by serial % 4: every partition has some
    assert sorted(v for entries in calls for _, v in entries) == list(range(10))
    for entries in calls:
        assert len({p.serial % 4 for p, _ in entries}) == 1  # one partition per call
    assert [node.get_process(p).got for p in subs] == [[("news", n)] for n in range(10)]


def test_a_processs_entries_go_when_it_exits(quiet_crash_reports):
    node = Node(seed=1)
    topics = Registry(node, "topics", keys="duplicate", partitions=2)
    a, b = node.spawn(Sub), node.spawn(Sub)
    for key in ("x", "y", "x"):
        topics.register(key, a)
    topics.register("x", b)
    node.exit(a, "kill")
    node.run()
    assert topics.lookup("x") == [(b, None)] and topics.lookup("y") == [] and len(topics) == 1
    assert [list(part) for part in topics._parts] == [["x"], []]  # nothing kept for a key nobody holds


def test_bad_input_is_refused_naming_what_is_wrong():
    node = Node(seed=1)
    with pytest.raises(ValueError, match="keys must be one of"):
        Registry(node, keys="dup")
    with pytest.raises(ValueError, match="partitions must be"):
        Registry(node, keys="duplicate", partitions=0)
    topics = Registry(node, "topics", keys="duplicate", limit=2)
    pid = node.spawn(Sub)
    with pytest.raises(ValueError, match="a key names no single process"):
        topics.via("news")
    with pytest.raises(ValueError, match="cannot be a registered name"):
        topics.register(None, pid)
    with pytest.raises(TypeError, match="needs the pid"):
        topics.unregister("news")
    with pytest.raises(NoProc):
        topics.register("news", _dead(node))
    topics.register("news", pid)
    topics.register("news", pid)
    with pytest.raises(SystemLimit):
        topics.register("news", pid)


def _dead(node):
    pid = node.spawn(Sub)
    node.cast(pid, "normal")
    node.run()
    return pid


def test_same_seed_same_dispatch_order():
    def run():
        node = Node(seed=3)
        topics = Registry(node, "t", keys="duplicate", partitions=3)
        pids = [node.spawn(Sub) for _ in range(7)]
        for pid in reversed(pids):
            topics.register(("room", 1), pid, pid.serial)
        seen = []
        topics.dispatch(("room", 1), lambda entries: seen.append([v for _, v in entries]))
        return seen
    assert run() == run() == [[6, 3], [7, 4, 1], [5, 2]]
