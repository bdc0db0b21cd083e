"""Amazon-style orders on the deterministic driver with a real LMDB store: carts, versioned
stock, the order saga and every way it can fail (out of stock, a declined charge, a hold
that lapses, a carrier that refuses, a provider that never answers, a crash at any
step), the payment provider's idempotency keys, and bad input."""
from __future__ import annotations

import pytest

from actors import CallExit, CallTimeout, Node
from apps.orders import (BadRequest, Declined, NotFound, OrderConfig, OrderService, PaymentService, ProviderConfig,
                         Unavailable)
from storage import StorageIOError, Store
from supervision import which_children

ADDRESS = {"street": "1 Main St", "city": "Boston", "country": "US"}
ABROAD = {"street": "1 Rue de Rivoli", "city": "Paris", "country": "ZZ"}
VISA, DECLINED = "pm_card_visa", "pm_card_chargeDeclined"


class Shop:
    """A shop and its payment provider on one deterministic node, on a real store."""

    def __init__(self, path, config=None, provider=None, clock=0.0, creation=0):
        self.node = Node(seed=1, creation=creation)
        self.node.advance(clock)
        self.store = Store(path, self.node, mode="process")
        self.bank = PaymentService(self.node, self.store, provider)
        self.bank.start()
        self.orders = OrderService(self.node, self.store, config)
        self.orders.start()

    def run(self, fut):
        return self.node.run_until_complete(fut)

    def settle(self, seconds=5.0):
        self.node.run_for(seconds)

    def order(self, order):
        return self.run(self.orders.order(self.node, order))

    def stock(self, sku):
        return self.run(self.orders.stock(self.node, sku))

    def charge(self, customer, key):
        return self.run(self.bank.charge_of(self.node, customer, key))


@pytest.fixture
def shop(tmp_path):
    shop = Shop(tmp_path / "shop")
    shop.run(shop.orders.receive_stock(shop.node, "book", "r1", 5, price=1999))
    shop.run(shop.orders.receive_stock(shop.node, "pen", "r2", 10, price=150))
    yield shop
    shop.store.close()


# -- the happy path and idempotency -------------------------------------------------------------


def test_a_checked_out_cart_is_reserved_charged_and_shipped(shop):
    node, orders = shop.node, shop.orders
    shop.run(orders.set_item(node, "alice", "book", 2))
    cart = shop.run(orders.set_item(node, "alice", "pen", 3))
    assert cart["lines"] == [["book", 2], ["pen", 3]]
    assert shop.run(orders.checkout(node, "alice", "o1", VISA, ADDRESS)) == "o1"
    assert shop.run(orders.cart(node, "alice"))["lines"] == []  # emptied once the order was stored
    shop.settle()
    order = shop.order("o1")
    assert order["status"] == "shipped" and order["amount"] == 2 * 1999 + 3 * 150
    assert [step for step, _ in order["history"]] == ["reserving", "paying", "shipping", "shipped"]
    assert order["tracking"] == "TRK-o1"
    assert shop.charge("alice", "o1")["status"] == "captured" and shop.charge("alice", "o1")["amount"] == 4448
    book = shop.stock("book")
    assert (book["on_hand"], book["available"], book["reserved"], book["sold"]) == (3, 3, 0, 2)
    assert shop.run(orders.open_orders(node)) == []


def test_a_retried_order_is_one_order_one_charge_and_one_sale(shop):
    node, orders = shop.node, shop.orders
    for _ in range(3):  # a client that never heard the answer
        assert shop.run(orders.place_order(node, "o1", "bob", [["book", 1]], VISA, ADDRESS)) == "o1"
    shop.settle()
    for _ in range(2):  # and once more, after it shipped
        assert shop.run(orders.place_order(node, "o1", "bob", [["book", 1]], VISA, ADDRESS)) == "o1"
    shop.run(orders.set_item(node, "bob", "pen", 1))
    for _ in range(2):
        assert shop.run(orders.checkout(node, "bob", "o2", VISA, ADDRESS)) == "o2"
    shop.settle()
    assert shop.order("o1")["status"] == shop.order("o2")["status"] == "shipped"
    assert shop.stock("book")["sold"] == 1 and shop.stock("pen")["sold"] == 1
    assert shop.charge("bob", "o1")["id"] == "ch_bob_1" and shop.charge("bob", "o2")["id"] == "ch_bob_2"


def test_an_order_id_reused_for_another_order_is_refused(shop):
    node, orders = shop.node, shop.orders
    shop.run(orders.place_order(node, "o1", "bob", [["book", 1]], VISA, ADDRESS))
    with pytest.raises(BadRequest, match="order id 'o1' was used for another order"):
        shop.run(orders.place_order(node, "o1", "bob", [["book", 2]], VISA, ADDRESS))
    shop.settle()
    with pytest.raises(BadRequest, match="used for another order"):
        shop.run(orders.place_order(node, "o1", "eve", [["book", 1]], VISA, ADDRESS))
    assert shop.stock("book")["sold"] == 1


def test_orders_racing_for_the_last_items_never_oversell(shop):
    node, orders = shop.node, shop.orders
    futures = [orders.place_order(node, f"o{i}", f"c{i}", [["book", 1], ["pen", 1]], VISA, ADDRESS)
               for i in range(8)]  # 5 books for 8 orders, all reserving at once
    for fut in futures:
        shop.run(fut)
    shop.settle()
    outcomes = [shop.order(f"o{i}") for i in range(8)]
    shipped = [o for o in outcomes if o["status"] == "shipped"]
    assert len(shipped) == 5
    assert all("1 wanted, 0 available" in o["reason"] for o in outcomes if o["status"] == "cancelled")
    book, pen = shop.stock("book"), shop.stock("pen")
    assert (book["on_hand"], book["reserved"], book["sold"]) == (0, 0, 5)
    assert (pen["on_hand"], pen["reserved"], pen["sold"]) == (5, 0, 5)  # the losers' pens went back
    for o in outcomes:
        if o["status"] == "cancelled":
            assert shop.charge(o["customer"], o["id"]) is None  # never charged


# -- every failure path compensates -------------------------------------------------------------


def test_out_of_stock_releases_the_lines_already_held(shop):
    node, orders = shop.node, shop.orders
    shop.run(orders.place_order(node, "o1", "bob", [["book", 9], ["pen", 2]], VISA, ADDRESS))
    shop.settle()
    order = shop.order("o1")
    assert order["status"] == "cancelled" and order["reason"] == "sku 'book': 9 wanted, 5 available"
    assert shop.stock("book")["available"] == 5 and shop.stock("pen")["available"] == 10
    assert shop.charge("bob", "o1") is None


def test_a_declined_charge_cancels_the_order_and_releases_its_stock(shop):
    node, orders = shop.node, shop.orders
    shop.run(orders.place_order(node, "o1", "bob", [["pen", 4]], DECLINED, ADDRESS))
    shop.settle()
    order = shop.order("o1")
    assert order["status"] == "cancelled" and order["reason"] == "payment declined: generic_decline"
    assert shop.stock("pen")["available"] == 10 and shop.stock("pen")["reserved"] == 0
    assert shop.charge("bob", "o1")["status"] == "declined"


def test_a_carrier_refusal_refunds_the_charge_and_returns_the_items(shop):
    node, orders = shop.node, shop.orders
    shop.run(orders.place_order(node, "o1", "bob", [["book", 2]], VISA, ABROAD))
    shop.settle()
    order = shop.order("o1")
    assert order["status"] == "cancelled" and order["reason"] == "the carrier does not deliver to ZZ"
    assert [step for step, _ in order["history"]] == ["reserving", "paying", "shipping", "compensating", "cancelled"]
    assert shop.charge("bob", "o1")["status"] == "refunded"
    book = shop.stock("book")
    assert (book["on_hand"], book["available"], book["sold"]) == (5, 5, 0)  # the sale came back


def test_a_hold_that_lapses_during_a_slow_charge_is_refunded(tmp_path):
    shop = Shop(tmp_path / "s", OrderConfig(hold=1.0, step_timeout=5.0), ProviderConfig(latency=(2.0, 2.0)))
    node, orders = shop.node, shop.orders
    shop.run(orders.receive_stock(node, "book", "r1", 1, price=500))
    shop.run(orders.place_order(node, "o1", "bob", [["book", 1]], VISA, ADDRESS))
    node.run_for(1.5)
    assert shop.stock("book")["available"] == 1  # the hold lapsed while the provider took its time
    shop.settle()
    order = shop.order("o1")
    assert order["status"] == "cancelled" and "lapsed" in order["reason"]
    assert shop.charge("bob", "o1")["status"] == "refunded"
    assert shop.stock("book")["sold"] == 0
    shop.store.close()


def test_charges_whose_answers_are_lost_past_pay_limit_are_voided_and_refunded(tmp_path):
    # The provider charges but loses every answer: the saga gives up at pay_limit and
    # voids the key (those answers are lost too, until the provider heals); the charge
    # it made is refunded, and the stock comes back.
    shop = Shop(tmp_path / "s", OrderConfig(pay_limit=2.0, step_timeout=0.2, retry_max=0.5),
                ProviderConfig(lost_rate=1.0))
    node, orders = shop.node, shop.orders
    shop.run(orders.receive_stock(node, "book", "r1", 2, price=500))
    shop.run(orders.place_order(node, "o1", "bob", [["book", 1]], VISA, ADDRESS))
    node.run_for(1.0)
    assert shop.order("o1")["status"] == "paying" and shop.charge("bob", "o1")["status"] == "captured"
    node.run_for(3.0)
    assert shop.order("o1")["status"] == "compensating" and shop.charge("bob", "o1")["status"] == "refunded"
    shop.run(shop.bank.stop())
    PaymentService(node, shop.store).start()  # the provider heals: answers arrive again
    shop.settle()
    order = shop.order("o1")
    assert order["status"] == "cancelled" and order["reason"] == "paying timed out"
    assert shop.charge("bob", "o1")["status"] == "refunded" and shop.stock("book")["available"] == 2
    shop.store.close()


def test_a_provider_down_past_pay_limit_gets_the_key_voided_before_the_charge(tmp_path):
    shop = Shop(tmp_path / "s", OrderConfig(pay_limit=1.0, step_timeout=0.2, retry_max=0.5))
    node, orders = shop.node, shop.orders
    shop.run(orders.receive_stock(node, "book", "r1", 2, price=500))
    shop.run(shop.bank.stop())
    shop.run(orders.place_order(node, "o1", "bob", [["book", 1]], VISA, ADDRESS))
    node.run_for(3.0)
    assert shop.order("o1")["status"] == "compensating"
    bank = PaymentService(node, shop.store)
    bank.start()
    shop.settle()
    assert shop.order("o1")["status"] == "cancelled" and shop.charge("bob", "o1")["status"] == "canceled"
    with pytest.raises(Declined, match="canceled"):  # the first charge, arriving late, is refused
        shop.run(bank.charge(node, "bob", "o1", 500, VISA, "o1"))
    shop.store.close()


def test_a_void_before_the_charge_arrives_makes_the_charge_decline(tmp_path):
    shop = Shop(tmp_path / "s")
    node, bank = shop.node, shop.bank
    assert shop.run(bank.cancel(node, "bob", "o9"))["status"] == "canceled"
    with pytest.raises(Declined, match="canceled"):  # a charge still in the network, late
        shop.run(bank.charge(node, "bob", "o9", 500, VISA, "o9"))
    assert shop.charge("bob", "o9")["status"] == "canceled"
    shop.store.close()


# -- the payment provider -----------------------------------------------------------------------


def test_the_provider_answers_a_key_again_and_refuses_it_for_another_charge(shop):
    node, bank = shop.node, shop.bank
    first = shop.run(bank.charge(node, "bob", "k1", 700, VISA, "o1"))
    assert first == {"id": "ch_bob_1", "amount": 700, "status": "captured"}
    assert shop.run(bank.charge(node, "bob", "k1", 700, VISA, "o1")) == first
    with pytest.raises(BadRequest, match="idempotency key 'k1' was used for another charge"):
        shop.run(bank.charge(node, "bob", "k1", 900, VISA, "o1"))
    for _ in range(2):  # a decline is remembered and answered again
        with pytest.raises(Declined, match="insufficient_funds"):
            shop.run(bank.charge(node, "bob", "k2", 700, "pm_card_chargeDeclinedInsufficientFunds", "o2"))
    assert shop.run(bank.cancel(node, "bob", "k1"))["status"] == "refunded"
    assert shop.run(bank.cancel(node, "bob", "k1"))["status"] == "refunded"


def test_a_flaky_provider_fails_and_loses_answers_but_never_charges_twice(tmp_path):
    shop = Shop(tmp_path / "s", provider=ProviderConfig(error_rate=0.3, lost_rate=0.3, seed=4))
    node, bank = shop.node, shop.bank
    outcomes = set()
    for _ in range(40):
        try:
            receipt = shop.run(bank.charge(node, "bob", "k1", 700, VISA, "o1"))
            outcomes.add(receipt["id"])
        except (Unavailable, CallTimeout) as exc:
            outcomes.add(type(exc).__name__)
    assert outcomes == {"ch_bob_1", "Unavailable", "CallTimeout"}
    assert shop.charge("bob", "k1")["id"] == "ch_bob_1"
    shop.store.close()


# -- crashes at any step ------------------------------------------------------------------------


def kill_sagas(shop):
    for child in shop.run(which_children(shop.node, "orders.sagas")):
        shop.node.exit(child.pid, "kill")


def test_a_saga_killed_after_any_number_of_turns_ends_shipped_exactly_once(tmp_path):
    turns = 0
    while True:
        shop = Shop(tmp_path / f"k{turns}", provider=ProviderConfig(latency=(0.01, 0.01)))
        node, orders = shop.node, shop.orders
        shop.run(orders.receive_stock(node, "book", "r1", 3, price=500))
        orders.place_order(node, "o1", "bob", [["book", 2]], VISA, ADDRESS)
        node.run(max_turns=turns)
        before = shop.order("o1")["status"]
        kill_sagas(shop)
        shop.settle()
        order = shop.order("o1")
        assert order["status"] == "shipped", (turns, before, order)
        assert shop.charge("bob", "o1")["status"] == "captured"
        book = shop.stock("book")
        assert (book["on_hand"], book["reserved"], book["sold"]) == (1, 0, 2), (turns, before)
        shop.store.close()
        if before == "shipped":
            break
        turns += 1
    assert turns > 10  # every step was hit


@pytest.mark.parametrize("stop_after", [0.0, 0.005, 0.015, 0.5])
def test_a_node_restart_resumes_open_orders_where_they_stopped(tmp_path, stop_after):
    shop = Shop(tmp_path / "s", provider=ProviderConfig(latency=(0.01, 0.01)))
    node, orders = shop.node, shop.orders
    shop.run(orders.receive_stock(node, "book", "r1", 3, price=500))
    shop.run(orders.place_order(node, "o1", "bob", [["book", 2]], VISA, ADDRESS))
    shop.run(orders.place_order(node, "o2", "eve", [["book", 1]], VISA, ABROAD))
    node.run_for(stop_after)
    clock = node.now()
    shop.store.crash()  # the node dies: nothing more is written
    again = Shop(tmp_path / "s", provider=ProviderConfig(latency=(0.01, 0.01)), clock=clock, creation=1)
    again.settle()
    assert again.order("o1")["status"] == "shipped" and again.order("o2")["status"] == "cancelled"
    assert again.charge("bob", "o1")["status"] == "captured" and again.charge("eve", "o2")["status"] == "refunded"
    book = again.stock("book")
    assert (book["on_hand"], book["reserved"], book["sold"]) == (1, 0, 2)
    assert again.run(again.orders.open_orders(again.node)) == []
    again.store.close()


def test_an_order_whose_opening_commit_failed_runs_no_saga_until_a_retry_opens_it(shop):
    node, orders = shop.node, shop.orders
    failed = []

    def fail_once():  # the commit holding the desk's "open" event fails
        if not failed:
            failed.append(True)
            return StorageIOError("commit failed (injected)")
        return None

    shop.store.commit_fault = fail_once
    with pytest.raises((CallExit, CallTimeout)):  # the desk crashed before it could answer
        shop.run(orders.place_order(node, "o1", "bob", [["book", 2]], VISA, ADDRESS))
    shop.settle()
    assert failed and shop.run(which_children(node, "orders.sagas")) == []  # nothing runs for it
    assert shop.stock("book")["reserved"] == 0 and shop.charge("bob", "o1") is None
    assert shop.run(orders.place_order(node, "o1", "bob", [["book", 2]], VISA, ADDRESS)) == "o1"
    shop.settle()
    assert shop.order("o1")["status"] == "shipped" and shop.stock("book")["sold"] == 2


# -- stock and carts ----------------------------------------------------------------------------


def test_stock_receipts_are_idempotent_and_move_the_version(shop):
    node, orders = shop.node, shop.orders
    before = shop.stock("book")
    again = shop.run(orders.receive_stock(node, "book", "r1", 5))  # r1 was received already
    assert again == before
    after = shop.run(orders.receive_stock(node, "book", "r9", 2, price=2100))
    assert (after["on_hand"], after["price"], after["version"]) == (7, 2100, before["version"] + 1)


def test_a_cart_takes_quantities_as_absolute_and_zero_removes(shop):
    node, orders = shop.node, shop.orders
    shop.run(orders.set_item(node, "al", "pen", 2))
    shop.run(orders.set_item(node, "al", "pen", 2))  # a retry: still 2
    assert shop.run(orders.set_item(node, "al", "book", 1))["lines"] == [["book", 1], ["pen", 2]]
    assert shop.run(orders.set_item(node, "al", "pen", 0))["lines"] == [["book", 1]]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda o, n: o.place_order(n, "o1", "bob", [], VISA, ADDRESS), "1..50 lines"),
    (lambda o, n: o.place_order(n, "o1", "bob", [["book", 1], ["book", 2]], VISA, ADDRESS), "appears twice"),
    (lambda o, n: o.place_order(n, "o1", "bob", [["book", 0]], VISA, ADDRESS), r"quantity must be an int in 1\.\.100"),
    (lambda o, n: o.place_order(n, "o1", "bob", [["book", 1.5]], VISA, ADDRESS), "quantity must be an int"),
    (lambda o, n: o.place_order(n, "", "bob", [["book", 1]], VISA, ADDRESS), "order id must be"),
    (lambda o, n: o.place_order(n, "o1", None, [["book", 1]], VISA, ADDRESS), "customer id must be"),
    (lambda o, n: o.place_order(n, "o1", "bob", [["book", 1]], "", ADDRESS), "payment method"),
    (lambda o, n: o.place_order(n, "o1", "bob", [["book", 1]], VISA, {"street": "x"}), "street, city, country"),
    (lambda o, n: o.place_order(n, "o1", "bob", [["book", 1]], VISA, {**ADDRESS, "country": "USA"}), "two-letter"),
    (lambda o, n: o.set_item(n, "bob", "book", -1), r"quantity must be an int in 0\.\.100"),
    (lambda o, n: o.set_item(n, "bob", ["x"], 1), "sku must be"),
    (lambda o, n: o.receive_stock(n, "book", "r1", 0), r"quantity must be an int in 1\.\."),
    (lambda o, n: o.receive_stock(n, "book", "r1", 1, price=0), "price must be an int of cents"),
    (lambda o, n: o.checkout(n, "bob", "o1", VISA, None), "an address is a dict"),
])
def test_bad_input_is_refused_before_anything_is_sent(shop, call, message):
    with pytest.raises(BadRequest, match=message):
        call(shop.orders, shop.node)
    assert shop.stock("book")["version"] == 1 and shop.run(shop.orders.open_orders(shop.node)) == []


def test_refusals_from_the_processes_name_what_is_wrong(shop):
    node, orders = shop.node, shop.orders
    with pytest.raises(BadRequest, match="the cart of customer 'nobody' is empty"):
        shop.run(orders.checkout(node, "nobody", "o1", VISA, ADDRESS))
    with pytest.raises(BadRequest, match="has no price yet"):
        shop.run(orders.receive_stock(node, "new", "r1", 3))
    with pytest.raises(NotFound, match="no order 'o404'"):
        shop.order("o404")
    with pytest.raises(BadRequest, match="amount must be"):
        shop.run(shop.bank.charge(node, "bob", "k", -5, VISA, "o1"))
    assert shop.stock("new")["on_hand"] == 0


def test_config_limits_are_checked():
    with pytest.raises(ValueError, match="OrderConfig.hold must be a positive number of seconds"):
        OrderConfig(hold=0)
    with pytest.raises(ValueError, match="retry_max"):
        OrderConfig(retry_min=2.0, retry_max=1.0)
    with pytest.raises(ValueError, match="two-letter country codes"):
        OrderConfig(ship_to=("USA",))
    with pytest.raises(ValueError, match="latency"):
        ProviderConfig(latency=(1.0, 0.5))
    with pytest.raises(ValueError, match="error_rate"):
        ProviderConfig(error_rate=2)
