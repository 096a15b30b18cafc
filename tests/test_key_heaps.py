from app.key_heaps import KeyHeaps


def test_pops_what_the_threshold_reached_lowest_first() -> None:
    h = KeyHeaps()
    for threshold, key in ((30, b"c"), (10, b"a"), (20, b"b"), (40, b"d")):
        h.push("p", threshold, key)
    h.push("q", 5, b"other")
    assert not h.ready("p", 9) and h.ready("p", 10) and not h.ready("p", None)
    assert h.pop_ready("p", 25) == [b"a", b"b"]
    assert h.pop_ready("p", 25) == []
    assert h.size() == 3


def test_limit_leaves_the_rest_for_later() -> None:
    h = KeyHeaps()
    for i in range(10):
        h.push(0, i, bytes([i]))
    assert h.pop_ready(0, 100, limit=4) == [bytes([i]) for i in range(4)]
    assert h.pop_ready(0, 100, limit=0) == []
    assert len(h.pop_ready(0, 100)) == 6
    assert not h.ready(0, 100) and not h.ready("never pushed", 100)


def test_clear() -> None:
    h = KeyHeaps()
    h.push(1, 1, b"x")
    h.clear()
    assert h.size() == 0 and h.pop_ready(1, 10) == []
