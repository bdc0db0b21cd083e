"""Random exit schedules against a small reference model of OTP's restart rules
(strategy x restart type x intensity), on the deterministic driver."""
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Node
from supervision import Flags, Supervisor, which_children
from test_supervision import run, worker


class Model:
    """What OTP's supervisor does, written as plainly as possible."""

    def __init__(self, strategy, restarts, max_restarts, max_seconds):
        self.strategy, self.max_restarts, self.max_seconds = strategy, max_restarts, max_seconds
        self.children = [{"id": f"c{i}", "restart": r, "running": True} for i, r in enumerate(restarts)]
        self.starts = {c["id"]: 1 for c in self.children}
        self.restart_times = []
        self.alive = True

    def running(self, cid):
        return self.alive and any(c["id"] == cid and c["running"] for c in self.children)

    def exit(self, cid, reason, now):
        index = next(i for i, c in enumerate(self.children) if c["id"] == cid)
        child = self.children[index]
        child["running"] = False
        normal = reason in ("normal", "shutdown")
        if child["restart"] == "temporary":
            del self.children[index]
            return
        if child["restart"] == "transient" and normal:
            return
        self.restart_times = [t for t in self.restart_times if t >= now - self.max_seconds] + [now]
        if len(self.restart_times) > self.max_restarts:
            self.alive = False
            return
        group = {"one_for_one": [child], "one_for_all": list(self.children),
                 "rest_for_one": self.children[index:]}[self.strategy]
        for c in group:
            c["running"] = False
            if c["restart"] == "temporary":
                self.children.remove(c)
        for c in group:
            if c["restart"] != "temporary":
                c["running"] = True
                self.starts[c["id"]] += 1


schedules = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.5]), st.integers(0, 3),
                               st.sampled_from(["crash", "normal", "shutdown"])), max_size=12)


@settings(deadline=None)
@given(strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
       restarts=st.lists(st.sampled_from(["permanent", "transient", "temporary"]), min_size=1, max_size=4),
       max_restarts=st.integers(0, 3), max_seconds=st.sampled_from([1, 2, 5]), schedule=schedules)
def test_supervisor_matches_the_reference_model(strategy, restarts, max_restarts, max_seconds, schedule):
    events = []
    node = Node(seed=3)
    specs = [worker(f"c{i}", events, restart=r) for i, r in enumerate(restarts)]
    sup = node.spawn(Supervisor, specs, Flags(strategy, max_restarts, max_seconds))
    model = Model(strategy, restarts, max_restarts, max_seconds)
    for delay, target, reason in schedule:
        node.run_for(delay)
        cid = f"c{target % len(restarts)}"
        if not model.running(cid):
            continue
        pid = {c.id: c.pid for c in run(node, which_children(node, sup))}[cid]
        node.cast(pid, ("raise", "boom") if reason == "crash" else ("stop", reason))
        node.run()
        model.exit(cid, reason, node.now())
    assert node.is_alive(sup) is model.alive
    assert {c["id"]: events.count(("start", c["id"])) for c in model.children} == \
        {c["id"]: model.starts[c["id"]] for c in model.children}
    if model.alive:
        actual = {c.id: c.pid is not None for c in run(node, which_children(node, sup))}
        assert actual == {c["id"]: c["running"] for c in model.children}
    else:
        assert len(node) == 0
