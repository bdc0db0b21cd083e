"""The semantics kept on the kernel's short paths: an async callback resumed by a call's
reply within the server's turn, calls with and without a timeout, and a process ending
its own turn, with links, monitors and other exits decided in that turn."""
from actors import CallTimeout, Down, Exit, GenServer, Node, NoReply


class Echo(GenServer):
    def handle_call(self, request, caller):
        if request == "never":
            self.held = caller
            return NoReply
        return ("echo", request)

    def handle_cast(self, msg):
        self.reply(self.held, "too late")


class Client(GenServer):
    """Calls `server` from async callbacks; `seen` records what happened, in order."""

    def init(self, server):
        self.server = server
        self.seen = []

    async def handle_call(self, request, caller):
        first = await self.call(self.server, request, timeout=None)
        second = await self.call(self.server, (request, 2))
        return [first, second]

    async def handle_cast(self, msg):
        if msg == "wait_forever":
            try:
                await self.call(self.server, "never", timeout=1.0)
            except CallTimeout:
                self.seen.append("timeout")
            return
        self.seen.append(await self.call(self.server, msg))
        if msg == "last":
            self.stop("normal")

    def handle_info(self, msg):
        self.seen.append(msg)


def test_a_reply_resumes_the_callback_and_its_result_answers_the_caller():
    node = Node(seed=1)
    client = node.spawn(Client, node.spawn(Echo))
    assert node.run_until_complete(node.call(client, "x")) == [("echo", "x"), ("echo", ("x", 2))]


def test_messages_queued_during_a_call_are_handled_after_it_in_order():
    node = Node(seed=1)
    client = node.spawn(Client, node.spawn(Echo))
    node.cast(client, "a")
    node.send(client, "info")
    node.cast(client, "b")
    node.run()
    assert node.get_process(client).seen == [("echo", "a"), "info", ("echo", "b")]


class Watcher(GenServer):
    """Traps exits, links to `linked` (unless None), monitors `watched`; `seen` records
    the signals, in order."""

    def init(self, linked, *watched):
        self.trap_exit = True
        self.seen = []
        if linked is not None:
            self.link(linked)
        for pid in watched:
            self.monitor(pid)

    def handle_info(self, msg):
        assert type(msg) in (Exit, Down), msg
        self.seen.append((type(msg).__name__, msg.pid, msg.reason))


def test_a_stop_after_a_resumed_call_ends_the_server_and_its_monitors_hear():
    node = Node(seed=1)
    client = node.spawn(Client, node.spawn(Echo))
    watcher = node.spawn(Watcher, None, client)
    node.cast(client, "last")
    node.run()
    assert node.get_process(client) is None
    assert node.get_process(watcher).seen == [("Down", client, "normal")]


def test_a_call_timeout_still_fires_and_the_late_reply_is_dropped():
    node = Node(seed=1)
    server = node.spawn(Echo)
    client = node.spawn(Client, server)
    node.cast(client, "wait_forever")
    node.run_for(2.0)
    assert node.get_process(client).seen == ["timeout"]
    node.cast(server, "reply now")
    node.cast(client, "after")
    node.run()
    assert node.get_process(client).seen == ["timeout", ("echo", "after")]


class Stopper(GenServer):
    """On a cast, kills `victim`, then stops itself normally, in one turn."""

    def init(self, victim):
        self.victim = victim

    def handle_cast(self, msg):
        self.exit(self.victim, "kill")
        self.stop("normal")


def test_a_server_ending_its_turn_exits_before_the_process_it_doomed_in_that_turn():
    node = Node(seed=1)
    victim = node.spawn(Echo)
    stopper = node.spawn(Stopper, victim)
    watcher = node.spawn(Watcher, stopper, stopper, victim)
    node.cast(stopper, "go")
    node.run()
    assert node.get_process(watcher).seen == [
        ("Exit", stopper, "normal"), ("Down", stopper, "normal"), ("Down", victim, "killed")]
    assert node.get_process(stopper) is None and node.get_process(victim) is None
