"""Hot code upgrade: a real module file in a temporary folder, edited and loaded again while
its servers run (actors.upgrade), on the deterministic driver and in real time."""
import importlib
import itertools
import sys
import textwrap

import pytest

from actors import Node
from actors.system import get_state, get_status
from actors.upgrade import upgrade
from conftest import arun
from storage import Store
from supervision import ChildSpec, Supervisor, which_children

V1 = '''
from actors import GenServer

def greeting():
    return "hello"

class Greeter(GenServer):
    vsn = 1

    def init(self, name):
        self.name = name
        self.count = 0

    def handle_call(self, request, caller):
        if request == "crash":
            raise RuntimeError("asked to")
        self.count += 1
        return f"{greeting()} {self.name} #{self.count}"
'''

V2 = '''
from actors import GenServer

def greeting():
    return "bonjour"

class Greeter(GenServer):
    vsn = 2

    def init(self, name):
        self.name, self.count, self.lang = name, 0, "fr"

    def code_change(self, old_vsn, state, extra):
        assert old_vsn == 1
        return {**state, "count": state["count"] * 10, "lang": extra}

    def handle_call(self, request, caller):
        if request == "crash":
            raise RuntimeError("asked to")
        self.count += 1
        return f"{greeting()}, {self.name}! ({self.lang}) #{self.count}"
'''

V3_REFUSES = V2.replace("vsn = 2", "vsn = 3").replace(
    "assert old_vsn == 1", "raise ValueError('cannot migrate from ' + str(old_vsn))").replace(
    'return f"{greeting()}, {self.name}!', 'return f"v3 {self.name}!')

_names = itertools.count()


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """make(source): a fresh module `upgrade_probe_N` in tmp_path, imported; its
    `write(source)` rewrites the file."""
    made = []

    def make(source):
        name = f"upgrade_probe_{next(_names)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        mod = importlib.import_module(name)
        mod.write = lambda new: path.write_text(textwrap.dedent(new))
        made.append(name)
        return mod

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in made:
        sys.modules.pop(name, None)


@pytest.fixture
def module(modules):
    """A module of V1's Greeter."""
    return modules(V1)


def run(node, fut):
    return node.run_until_complete(fut)


def test_an_upgrade_keeps_the_state_and_moves_servers_to_the_new_code(module):
    node = Node(seed=1)
    ann = node.spawn(module.Greeter, "ann")
    sup = node.spawn(Supervisor, [ChildSpec("bob", module.Greeter, args=("bob",))])
    (bob,) = [c.pid for c in run(node, which_children(node, sup))]
    assert run(node, node.call(ann, "hi")) == "hello ann #1"
    old_class = module.Greeter

    module.write(V2)
    report = run(node, upgrade(node, module.__name__, extra="fr-CA"))
    assert report.upgraded == [(ann, 1, 2), (bob, 1, 2)] and report.failed == [] and report.error is None
    assert run(node, node.call(ann, "hi")) == "bonjour, ann! (fr-CA) #11"  # same pid, state moved
    assert run(node, get_status(node, ann))["vsn"] == 2
    assert run(node, get_status(node, ann))["status"] == "running"  # resumed

    node.call(bob, "crash")  # its supervisor restarts it from the spec, which holds the old class
    node.run()
    (bob2,) = [c.pid for c in run(node, which_children(node, sup))]
    assert bob2 != bob and run(node, node.call(bob2, "hi")) == "bonjour, bob! (fr) #1"
    assert run(node, node.call(node.spawn(old_class, "cy"), "hi")) == "bonjour, cy! (fr) #1"


def test_a_failing_code_change_keeps_that_server_on_its_old_code(module):
    node = Node(seed=1)
    ann = node.spawn(module.Greeter, "ann")
    module.write(V2)
    run(node, upgrade(node, module))
    assert run(node, node.call(ann, "hi")) == "bonjour, ann! (None) #1"

    module.write(V3_REFUSES)
    report = run(node, upgrade(node, module))
    assert report.upgraded == [] and [pid for pid, _ in report.failed] == [ann]
    assert str(report.failed[0][1]) == "cannot migrate from 2"
    assert run(node, node.call(ann, "hi")) == "bonjour, ann! (None) #2"  # the old code, its state
    assert run(node, get_status(node, ann))["vsn"] == 2
    fresh = node.spawn(module.Greeter, "cy")
    assert run(node, node.call(fresh, "hi")) == "v3 cy! (fr) #1"  # new servers get the new code


def test_a_module_that_does_not_load_changes_nothing(module):
    node = Node(seed=1)
    ann = node.spawn(module.Greeter, "ann")
    module.write(V2 + "\ndef broken(:\n")
    report = run(node, upgrade(node, module.__name__))
    assert isinstance(report.error, SyntaxError) and report.upgraded == []
    assert run(node, node.call(ann, "hi")) == "hello ann #1"
    assert run(node, get_status(node, ann))["status"] == "running"


def test_an_upgrade_moves_a_persistent_servers_state_and_stores_it(modules, tmp_path):
    source = '''
from storage import PersistentServer

class Account(PersistentServer):
    vsn = VSN

    def initial_state(self):
        return {"cents": 1250}

    def code_change(self, old_vsn, state, extra):
        return {"euros": state["cents"] / 100}

    def handle_call(self, request, caller):
        return self.state
'''
    mod = modules(source.replace("VSN", "1"))
    node = Node(seed=1)
    store = Store(str(tmp_path / "store"), node)
    pid = node.spawn(mod.Account, store, "acct")
    assert run(node, node.call(pid, "get")) == {"cents": 1250}
    mod.write(source.replace("VSN", "2"))
    report = run(node, upgrade(node, mod))
    assert report.upgraded == [(pid, 1, 2)]
    assert run(node, get_state(node, pid)) == {"euros": 12.5}
    store.close()
    node = Node(seed=2)
    store = Store(str(tmp_path / "store"), node)
    try:
        assert run(node, node.call(node.spawn(mod.Account, store, "acct"), "get")) == {"euros": 12.5}
    finally:
        store.close()


def test_an_upgrade_from_a_process_and_in_real_time(module):
    got = []

    async def operator(proc, target):
        report = await upgrade(proc, module.__name__, extra="de")
        got.append((report.upgraded, await proc.call(target, "hi")))

    node = Node(seed=1)
    ann = node.spawn(module.Greeter, "ann")
    module.write(V2)
    node.spawn(operator, ann)
    node.run()
    assert got == [([(ann, 1, 2)], "bonjour, ann! (de) #1")]

    module.write(V2.replace("vsn = 2", "vsn = 3").replace("assert old_vsn == 1", "pass"))

    async def main():
        async with Node() as live:
            pid = live.spawn(module.Greeter, "eve")
            report = await upgrade(live, module.__name__)
            assert report.upgraded == [(pid, 2, 3)]

    arun(main())


def test_upgrade_names_a_module_that_is_not_loaded():
    with pytest.raises(ValueError, match="loaded module"):
        upgrade(Node(seed=1), "no_such_module_anywhere")
    with pytest.raises(TypeError, match="caller"):
        upgrade("node", "actors")



def test_a_version_that_adds_an_idle_timeout_gets_its_idle_events_after_the_upgrade(module):
    node = Node(seed=1)
    ann = node.spawn(module.Greeter, "ann")
    module.write(V2.replace("vsn = 2", "vsn = 2\n    idle_timeout = 1.0") + '''
    def handle_idle(self):
        self.lang = "idle"
''')
    assert run(node, upgrade(node, module.__name__, extra="fr")).upgraded == [(ann, 1, 2)]
    assert run(node, node.call(ann, "hi")) == "bonjour, ann! (fr) #1"
    node.run_for(2.0)  # the quiet counts from the last message, now that the code has one
    assert run(node, node.call(ann, "hi")) == "bonjour, ann! (idle) #2"
