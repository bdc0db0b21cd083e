"""Placement (`actors.placement`): rendezvous hashing over the live node list, a pure
function, so a simulation's nodes and a real cluster's place keys alike."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import BOUND, ROOT

from actors.placement import node_for, place
from sim.core import Simulation

NODES = ["a@h", "b@h", "c@h", "d@h"]
KEYS = [f"room-{i}" for i in range(400)] + list(range(100)) + [b"bytes-key"]


def test_the_order_of_the_node_list_does_not_matter_and_every_node_gets_keys():
    placed = {key: place(key, NODES) for key in KEYS}
    assert all(place(key, reversed(NODES)) == node for key, node in placed.items())
    counts = {node: list(placed.values()).count(node) for node in NODES}
    assert all(len(KEYS) / 8 < n < len(KEYS) / 2 for n in counts.values()), counts


def test_only_the_keys_of_a_node_that_goes_move_and_a_node_that_joins_takes_keys_only_for_itself():
    before = {key: place(key, NODES) for key in KEYS}
    after_leave = {key: place(key, [n for n in NODES if n != "b@h"]) for key in KEYS}
    assert {key for key in KEYS if before[key] != after_leave[key]} == {k for k, n in before.items() if n == "b@h"}
    after_join = {key: place(key, NODES + ["e@h"]) for key in KEYS}
    assert {after_join[key] for key in KEYS if after_join[key] != before[key]} == {"e@h"}


def test_the_same_in_another_process_whatever_its_hash_seed():
    code = "from actors.placement import place; print([place(f'room-{i}', ['a@h', 'b@h', 'c@h']) for i in range(50)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == str([place(f"room-{i}", ["a@h", "b@h", "c@h"]) for i in range(50)])


def test_bad_keys_and_no_nodes_say_what_is_wrong():
    with pytest.raises(TypeError, match="str, bytes or int, not tuple"):
        place(("a", 1), NODES)
    with pytest.raises(ValueError, match="no live node to place 'k'"):
        place("k", [])


def test_simulated_nodes_agree_and_after_a_crash_only_the_crashed_nodes_keys_move():
    sim = Simulation(1)
    for name in ("a", "b", "c"):
        sim.add_node(name, lambda node: None)
    sim.run(1.0)
    keys = [f"user-{i}" for i in range(60)]
    seen = {name: [node_for(sim.node(name), key) for key in keys] for name in ("a", "b", "c")}
    assert seen["a"] == seen["b"] == seen["c"] == [place(key, ["a", "b", "c"]) for key in keys]
    sim.crash_node("b")
    sim.run(3.0)
    after = {name: [node_for(sim.node(name), key) for key in keys] for name in ("a", "c")}
    assert after["a"] == after["c"]
    assert all(new == old for old, new in zip(seen["a"], after["a"], strict=True) if old != "b")
    assert "b" not in after["a"] and "b" in seen["a"]
