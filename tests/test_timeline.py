"""Twitter-style timelines: Snowflake ids, the timeline state and merge, then the service
on the deterministic driver with a real LMDB store (hybrid fan-out, follows, pagination,
batching, retries, crashes and restarts, pushes, bad input)."""
from __future__ import annotations

import pytest

from actors import CallTimeout, GenServer, Node
from apps.timeline import BadRequest, Page, Snowflake, TimelineConfig, TimelineService, Unavailable, user_id
from apps.timeline.author import Author
from apps.timeline import home
from apps.timeline.snowflake import MAX_SEQ, make_id, split_id
from storage import Store, StorageIOError, entities_info, entity_call

# -- Snowflake ----------------------------------------------------------------------------------


def test_snowflake_layout_is_41_bits_of_ms_10_of_machine_12_of_sequence():
    gen = Snowflake(machine=5)
    first = gen.next(1.2345)
    assert split_id(first) == (1234, 5, 0)
    assert first == (1234 << 22) | (5 << 12)
    assert split_id(gen.next(1.2345)) == (1234, 5, 1)
    assert split_id(gen.next(1.2351)) == (1235, 5, 0)  # a new millisecond starts at 0


def test_snowflake_ids_increase_across_sequence_overflow_and_a_clock_going_back():
    gen = Snowflake(machine=1)
    ids = [gen.next(2.0) for _ in range(MAX_SEQ + 3)]  # 4098 ids in one millisecond
    assert ids == sorted(set(ids))
    assert split_id(ids[MAX_SEQ])[1:] == (1, MAX_SEQ) and split_id(ids[-1])[0] == 2001
    back = gen.next(1.0)  # the clock went back a second
    assert back > ids[-1]
    assert split_id(gen.next(2.5))[0] == 2500


def test_a_restarted_snowflake_continues_after_its_last_id():
    gen = Snowflake(machine=3)
    last = [gen.next(10.0) for _ in range(5)][-1]
    again = Snowflake(machine=3, last=last)
    assert again.last == last and again.next(0.0) > last  # even with the clock at zero
    with pytest.raises(ValueError, match="made by machine 3, not 4"):
        Snowflake(machine=4, last=last)
    with pytest.raises(ValueError, match="machine id must be an int in 0..1023"):
        Snowflake(machine=1024)
    with pytest.raises(OverflowError):
        Snowflake(0, last=make_id((1 << 41) - 1, 0, MAX_SEQ)).next(0.0)


# -- the timeline state -------------------------------------------------------------------------


def test_insert_keeps_the_newest_capacity_ids_newest_first_without_repeats():
    ids: list[int] = []
    for tweet_id in [5, 9, 1, 7, 9, 3]:
        home.insert(ids, tweet_id, 4)
    assert ids == [9, 7, 5, 3]
    assert not home.insert(ids, 2, 4)  # older than everything kept: not taken
    assert home.insert(ids, 8, 4) and ids == [9, 8, 7, 5]


def test_pages_walk_the_newest_capacity_of_the_merge_fifty_at_a_time():
    pushed = list(range(2000, 0, -2))  # 1000 even ids, newest first
    pulled = list(range(1999, 1000, -2))  # 500 odd ids from a celebrity
    lists = [pushed, pulled, [1998, 1500]]  # repeats are shown once
    seen, cursor, pages = [], None, 0
    while True:
        ids, cursor = home.page(lists, cursor, 50, 800)
        pages += 1
        seen += ids
        if cursor is None:
            break
        assert len(ids) == 50 and cursor == ids[-1]
    assert pages == 16 and seen == list(range(2000, 1200, -1))
    assert seen == home.newest(lists, 800)
    assert home.page(lists, 1201, 50, 800) == ([], None)


def test_since_filter_keeps_only_ids_after_the_follow():
    assert home.since_filter([9, 7, 5, 3], 5) == [9, 7]
    assert home.since_filter([9, 7], -1) == [9, 7]


# -- the service ----------------------------------------------------------------------------------


class Client(GenServer):
    def init(self, box: list) -> None:
        self.box = box

    def handle_info(self, msg):
        self.box.append(msg)


class World:
    def __init__(self, path, seed=1, **config):
        self.path = path
        self.config = TimelineConfig(**config)
        self.boot(seed)

    def boot(self, seed=1, creation=0):
        self.node = Node(seed=seed, creation=creation)
        self.store = Store(self.path, self.node, mode="process")
        self.svc = TimelineService(self.node, self.store, self.config)
        self.svc.start()

    def run(self, fut):
        return self.node.run_until_complete(fut)

    def post(self, author, text="tweet", cid=None):
        tweet_id = self.run(self.svc.post(self.node, author, text, cid))
        return tweet_id

    def follow(self, user, author):
        return self.run(self.svc.follow(self.node, user, author))

    def unfollow(self, user, author):
        return self.run(self.svc.unfollow(self.node, user, author))

    def timeline(self, user):
        ids, cursor = [], None
        while True:
            page = self.run(self.svc.read_page(self.node, user, cursor))
            ids += page.ids
            if page.cursor is None:
                return ids
            cursor = page.cursor

    def settle(self, seconds=0.5):
        self.node.run_for(seconds)

    def restart(self, seed=2):
        self.store.close()
        self.boot(seed, creation=1)


@pytest.fixture
def world(tmp_path):
    return World(str(tmp_path / "timeline"))


def test_a_post_reaches_every_follower_and_only_them(world):
    for user in (2, 3, 4):
        world.follow(user, 1)
    tweet = world.post(1, "hello")
    world.settle()
    for user in (2, 3, 4):
        assert world.timeline(user) == [tweet]
    assert world.timeline(5) == []
    assert world.run(world.svc.tweets(world.node, 1, [tweet])) == {tweet: "hello"}


def test_following_and_unfollowing_take_effect_for_later_tweets_only(world):
    before = world.post(1, "before")
    since = world.follow(2, 1)
    assert since == before
    during = world.post(1, "during")
    until = world.unfollow(2, 1)
    assert until == during
    after = world.post(1, "after")
    world.settle()
    assert world.timeline(2) == [during]
    assert after > during > before
    assert world.unfollow(2, 1) == during  # a retried unfollow answers the same
    assert world.follow(3, 1) == after and world.follow(3, 1) == after  # and a retried follow


def test_a_retried_post_is_stored_once(world):
    world.follow(2, 1)
    first = world.post(1, "once", cid="c1")
    assert world.post(1, "once", cid="c1") == first
    world.settle()
    assert world.timeline(2) == [first]


def test_celebrity_tweets_are_merged_on_read_and_kept_after_unfollow(tmp_path):
    world = World(str(tmp_path / "t"), threshold=3)
    for user in (10, 11, 12):
        world.follow(user, 1)
    pushed = world.post(1, "still under the threshold")
    world.follow(13, 1)  # 4 followers: above it from now on
    pulled = [world.post(1, f"celebrity {i}") for i in range(3)]
    world.settle()
    author = world.run(world.svc.tweets(world.node, 1, pulled))
    assert sorted(author) == sorted(pulled)
    for user in (10, 11, 12):
        assert world.timeline(user) == pulled[::-1] + [pushed]
        state = world.node.get_process(_entity(world, "timelines", user)).state
        assert pulled[0] not in state["ids"] and 1 in state["pulls"]  # merged, not stored
    assert world.timeline(13) == pulled[::-1]  # followed after the pushed one
    world.unfollow(10, 1)
    world.post(1, "after the unfollow")
    world.settle()
    assert world.timeline(10) == pulled[::-1] + [pushed]
    late = world.follow(14, 1)
    world.settle()
    assert world.timeline(14) == [] and late > pulled[-1]


def test_an_unfollow_before_the_pull_me_mark_arrives_keeps_the_pulled_tweets(tmp_path):
    world = World(str(tmp_path / "t"), threshold=1)
    world.follow(10, 1)
    world.follow(11, 1)  # two followers: author 1's next tweet is pulled, with a mark
    timelines = world.node.whereis("timeline.timelines")
    world.node.unregister("timeline.timelines")  # the fan-out cannot deliver the mark yet
    pulled = world.post(1, "pulled")
    until = world.run(entity_call(world.node, timelines, ("timeline", 10), ("unfollow", 1)))
    world.node.register("timeline.timelines", timelines)
    world.settle(3.0)  # the mark arrives after the unfollow
    assert until == pulled
    assert world.timeline(10) == [pulled] and world.timeline(11) == [pulled]
    state = world.node.get_process(_entity(world, "timelines", 10)).state
    assert state["pulls"] == {} and state["ids"] == [pulled]


def test_a_merged_read_fails_cleanly_when_a_celebrity_does_not_answer(tmp_path, monkeypatch):
    world = World(str(tmp_path / "t"), threshold=1, call_timeout=1.0)
    world.follow(10, 1)
    world.follow(11, 1)
    pulled = world.post(1, "pulled")
    world.settle()
    assert world.timeline(10) == [pulled]
    monkeypatch.setattr(Author, "handle_cast", lambda self, msg: None)  # it never answers
    with pytest.raises(Unavailable, match="did not answer timeline 10 in 0.5 s"):
        world.run(world.svc.read_page(world.node, 10))
    monkeypatch.undo()
    assert world.timeline(10) == [pulled]  # the timeline itself was not disturbed


def _entity(world, kind, user):
    """The pid of the running entity `(kind[:-1], user)` (found among the node's processes)."""
    key = (kind[:-1], user)
    (pid,) = [pid for pid in world.node.processes()
              if getattr(world.node.get_process(pid), "key", None) == key]
    return pid


def test_a_timeline_keeps_800_newest_first_in_16_pages_of_50(tmp_path):
    world = World(str(tmp_path / "t"), threshold=1)
    world.follow(9, 1)  # author 1 pushes (1 follower); authors 2 and 3 become celebrities
    for author in (2, 3):
        world.follow(9, author)
        world.follow(10, author)
    posted = []
    for i in range(350):
        for author in (1, 2, 3):
            posted.append(world.post(author, f"{author}/{i}"))
    world.settle()
    pages, cursor = [], None
    while True:
        page = world.run(world.svc.read_page(world.node, 9, cursor))
        pages.append(page.ids)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert [len(p) for p in pages] == [50] * 16
    seen = [i for p in pages for i in p]
    assert seen == sorted(posted, reverse=True)[:800]


def test_one_big_fan_out_does_not_hold_up_the_others(tmp_path):
    world = World(str(tmp_path / "t"), fanout_batch=64)
    for user in range(100, 1100):
        world.follow(user, 1)
    world.follow(5, 2)
    inbox: list = []
    client = world.node.spawn(Client, inbox)
    world.run(world.svc.subscribe(world.node, 5, client))
    world.run(world.svc.subscribe(world.node, 1099, client))
    world.post(1, "to a thousand")
    world.post(2, "to one")
    world.settle()
    arrivals = [msg[1] for msg in inbox]
    assert arrivals == [5, 1099]  # the small job went first; the big one was batched
    fanout = world.node.get_process(world.node.whereis("timeline.fanout"))
    assert fanout.jobs == {} and len(fanout.state["done"]) == 2


def test_inserts_lost_with_crashed_timelines_are_sent_again(tmp_path):
    world = World(str(tmp_path / "t"), retry_after=1.0)
    for user in range(20, 40):
        world.follow(user, 1)
    world.node.run_for(0.0)
    victims = [_entity(world, "timelines", u) for u in range(20, 30)]
    tweet = world.post(1, "hi")
    for pid in victims:  # the inserts are queued for them: they die with them
        world.node.exit(pid, "kill")
    world.settle(5.0)
    assert all(world.timeline(u) == [tweet] for u in range(20, 40))
    assert world.node.get_process(world.node.whereis("timeline.fanout")).jobs == {}


def test_acknowledged_posts_survive_a_node_restart_even_mid_fan_out(tmp_path):
    world = World(str(tmp_path / "t"), fanout_batch=8)
    for user in range(100, 300):
        world.follow(user, 1)
    tweets = [world.post(1, f"t{i}") for i in range(3)]
    world.restart()  # the fan-out was still under way
    world.settle(3.0)
    for user in range(100, 300, 37):
        assert world.timeline(user) == tweets[::-1]
    assert world.post(1, "new") > tweets[-1]  # ids keep increasing after the restart


def test_a_post_whose_hand_over_was_cut_short_is_handed_over_on_the_retry(world):
    for user in (2, 3):
        world.follow(user, 1)
    fanout = world.node.whereis("timeline.fanout")
    world.node.unregister("timeline.fanout")  # the author cannot hand the job over...
    pending = world.svc.post(world.node, 1, "stuck", "cid")
    world.node.run_for(1.0)
    assert not pending.done()
    world.node.exit(_entity(world, "authors", 1), "kill")  # ...and dies trying
    world.node.register("timeline.fanout", fanout)
    tweet = world.post(1, "stuck", cid="cid")  # the client's retry
    world.settle()
    assert world.timeline(2) == [tweet] and world.timeline(3) == [tweet]


def test_an_author_whose_commit_failed_mid_post_crashes_and_the_retry_posts(world):
    world.follow(2, 1)
    world.post(1, "warm-up: the id lease is stored")
    world.settle()  # its fan-out is done: the next commit is the new tweet's
    faults = [StorageIOError("injected: the commit of the next tweet fails")]
    world.store.commit_fault = lambda: faults.pop() if faults else None
    with pytest.raises(CallTimeout):  # its reply can never leave: it was not stored
        world.post(1, "again", cid="c")
    world.settle(30.0)  # the author gives up handing the job over and crashes
    tweet = world.post(1, "again", cid="c")  # the retry: the tweet was never stored
    world.settle()
    assert world.timeline(2)[0] == tweet and len(world.timeline(2)) == 2


def test_a_full_fan_out_queue_holds_posts_back_until_it_drains(tmp_path):
    world = World(str(tmp_path / "t"), max_jobs=1, call_timeout=1.0)
    world.follow(2, 1)
    timelines = world.node.whereis("timeline.timelines")
    world.node.unregister("timeline.timelines")  # the first job cannot finish for now
    first = world.post(1, "first")
    with pytest.raises(CallTimeout):  # the queue is full: the post is not acknowledged
        world.post(1, "second", cid="c2")
    world.node.register("timeline.timelines", timelines)
    world.settle(10.0)  # the first job drains (its author gave up on the second and crashed)
    second = world.post(1, "second", cid="c2")
    world.settle()
    assert world.timeline(2) == [second, first]


def test_ids_stay_unique_when_the_restarted_node_clock_is_behind(world):
    world.node.run_for(100.0)
    before = [world.post(1, f"{i}") for i in range(5)]
    world.restart()  # the new node's clock starts at 0 again
    after = world.post(1, "later")
    assert after > max(before)


def test_subscribers_get_new_tweet_ids_as_they_come(tmp_path):
    world = World(str(tmp_path / "t"), threshold=1)
    world.follow(7, 1)
    world.follow(7, 2)
    world.follow(8, 2)  # author 2 has 2 followers: above the threshold, it will pull
    inbox: list = []
    client = world.node.spawn(Client, inbox)
    world.run(world.svc.subscribe(world.node, 7, client))
    pushed = world.post(1, "pushed")
    first_pulled = world.post(2, "pulled: the followers learn to pull")
    world.settle()
    second_pulled = world.post(2, "pulled again")
    world.settle()
    assert inbox == [("tweet", 7, pushed), ("tweet", 7, first_pulled), ("tweet", 7, second_pulled)]


def test_bad_input_is_refused_by_name_and_nothing_stored_is_lost(world):
    world.follow(2, 1)
    kept = world.post(1, "kept")
    for text, error in [("x" * 281, "at most 280 characters, this one has 281"), ("", "non-empty str"),
                        (b"bytes", "non-empty str")]:
        with pytest.raises(BadRequest, match=error):
            world.post(1, text)
    with pytest.raises(BadRequest, match="cannot follow themselves"):
        world.follow(1, 1)
    with pytest.raises(BadRequest, match="must be a user id"):
        world.follow(2, "bob")
    with pytest.raises(BadRequest, match="must be a user id"):
        world.svc.post(world.node, -1, "x")
    with pytest.raises(BadRequest, match="cursor"):
        world.run(world.svc.read_page(world.node, 2, "abc"))
    world.settle()
    assert world.timeline(2) == [kept]
    world.restart()
    assert world.timeline(2) == [kept]


@pytest.mark.parametrize("name, error", [
    ("", "user name cannot be empty"), ("x" * 500_000, "user name of 500000 characters; the limit is 64"),
    ("eve\nforged", r"user name 'eve\\nforged' has a control character .* \(at 3\)"),
    ("a\x00", "control character"), (7, "user name must be a str, got int")],
    ids=["empty", "500k", "newline", "nul", "int"])
def test_a_bad_user_name_is_refused_naming_what_is_wrong(name, error):
    with pytest.raises(BadRequest, match=error):
        user_id(name)


def test_a_user_name_maps_to_one_id_in_range():
    assert user_id("alice smith") == user_id("alice smith") != user_id("alice")
    assert 0 <= user_id("é" * 64) < 1 << 63 and user_id("x" * 100, max_len=100) >= 0


def test_idle_timelines_are_passivated_and_come_back_from_the_store(tmp_path):
    world = World(str(tmp_path / "t"), idle_timeout=2.0)
    for user in range(50, 60):
        world.follow(user, 1)
    tweet = world.post(1, "hi")
    world.settle()
    timelines = world.node.whereis("timeline.timelines")
    world.node.run_for(10.0)
    assert world.run(entities_info(world.node, timelines))["active"] == 0
    assert world.timeline(55) == [tweet]
    assert isinstance(world.run(world.svc.read_page(world.node, 55)), Page)


@pytest.mark.parametrize("field, value, error", [
    ("capacity", 0, "TimelineConfig.capacity must be a positive int, got 0"),
    ("threshold", True, "TimelineConfig.threshold must be a positive int, got True"),
    ("lease", -1, "TimelineConfig.lease must be a positive number of seconds, got -1"),
    ("nodes", ("a", "a"), "TimelineConfig.nodes must be at most 1024 distinct names"),
    ("page", 801, r"TimelineConfig.page \(801\) exceeds capacity \(800\)"),
])
def test_a_bad_config_is_refused_naming_the_field(field, value, error):
    with pytest.raises(ValueError, match=error):
        TimelineConfig(**{field: value})
