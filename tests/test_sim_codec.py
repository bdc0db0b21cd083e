"""What crosses between simulated nodes goes through the wire's codec, as over a socket."""
from actors import CallExit, GenServer, NoReply, RemoteName
from sim.core import Simulation


class Thing:
    """An object msgpack cannot encode."""


class Sink(GenServer):
    def init(self, got):
        self.got = got

    def handle_cast(self, msg):
        self.got.append(msg)

    def handle_call(self, request, caller):
        if request == "fail":
            raise ValueError("refused", 7)
        if request == "later":
            self.cast(self.pid, ("answer", caller))  # a From in a message: answered later
            return NoReply
        return ("echo", request)




def world(codec=True):
    sim = Simulation(seed=1)
    sim.network.codec = codec  # scenarios turn it on by default (the runner)
    got = []
    sim.add_node("server", start=lambda node: node.register("sink", node.spawn(Sink, got)))
    client = sim.add_node("client", start=lambda node: None)
    return sim, client, got


def test_a_message_that_cannot_go_over_a_wire_fails_the_run_naming_it_and_the_nodes():
    sim, client, got = world()
    sink = RemoteName("sink", "server")
    client.cast(sink, ("ok", (1, 2), [3], {"k": b"v"}))
    sim.run(until=1.0)
    assert got == [("ok", (1, 2), [3], {"k": b"v"})]  # tuples stay tuples, lists stay lists
    client.cast(sink, {"payload": Thing()})
    sim.run(until=2.0)
    assert got == [("ok", (1, 2), [3], {"k": b"v"})] and sim.failure is not None and sim.failure.check == "codec"
    message = sim.failure.message
    assert "a cast from node 'client' to node 'server' cannot go over a wire" in message
    assert "it carries a dict" in message and "Thing" in message


def test_without_the_codec_objects_cross_as_they_are():
    sim, client, got = world(codec=False)
    client.cast(RemoteName("sink", "server"), Thing())
    sim.run(until=1.0)
    assert sim.failure is None and type(got[0]) is Thing


def test_replies_errors_and_forwarded_callers_cross_as_themselves():
    sim, client, got = world()
    out = []

    async def caller(proc):
        sink = RemoteName("sink", "server")
        out.append(await proc.call(sink, (1, "two")))
        try:
            await proc.call(sink, "fail")
        except CallExit as exc:
            out.append(exc.reason)

    client.spawn(caller)
    sim.run(until=1.0)
    assert sim.failure is None
    assert out[0] == ("echo", (1, "two"))
    assert type(out[1]) is ValueError and out[1].args == ("refused", 7)


def test_a_caller_handed_on_in_a_message_gets_its_reply():
    sim, client, got = world()
    out = []

    class Answerer(GenServer):
        def handle_cast(self, msg):
            self.reply(msg[1], "late answer")

    async def caller(proc):
        out.append(await proc.call(RemoteName("sink", "server"), "later"))

    def handle_cast(self, msg):  # the sink hands the caller on to a process of its own
        if msg[0] == "answer":
            self.cast(self.node.spawn(Answerer), msg)
        else:
            self.got.append(msg)

    Sink.handle_cast, original = handle_cast, Sink.handle_cast
    try:
        client.spawn(caller)
        sim.run(until=1.0)
    finally:
        Sink.handle_cast = original
    assert sim.failure is None and out == ["late answer"]


def test_scenarios_turn_the_codec_on_unless_they_say_otherwise():
    from sim.scenario import load, parse

    scenario = load("scenarios/counter.toml")
    assert scenario.data["network"]["codec"] is True
    text = scenario.to_toml()
    assert "codec = true" in text  # every default spelled out
    off = parse(text.replace("codec = true", "codec = false"), "off.toml")
    assert off.data["network"]["codec"] is False
