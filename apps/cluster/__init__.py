"""Clusters of letitcrash nodes in separate OS processes (the distribution of `actors.dist`).

    letitcrash cluster start --nodes 4 apps.cluster.demo:counter     # a laptop cluster
    letitcrash cluster start --ray auto apps.cluster.chat:start      # the same on Ray
    letitcrash node --name a@127.0.0.1 --listen 127.0.0.1:4370 apps.cluster.demo:chat

Modules: `launcher` (`start`: N node processes on this machine over Unix sockets, their
logs, stopping them), `host` (`run_node`: one node in this process, what any launcher
starts), `on_ray` (`start_on_ray`: nodes as Ray actors on a Ray cluster; needs the
`cluster` extra, imported only when used), `chat` (the chat application across the
nodes), `demo` (a counter and a chat room spread over the nodes, the same code under
the simulator).
"""
from .host import run_node
from .launcher import Cluster, ClusterError, start

__all__ = ["Cluster", "ClusterError", "run_node", "start"]
