"""The circuit breaker: closed -> open for a cool-down -> one probe -> closed or open again."""

from __future__ import annotations

import threading

from fallbackbus.rabbitmq.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(cooldown: float = 5.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(cooldown, clock=clock), clock


def test_a_new_breaker_is_closed_and_lets_every_call_through() -> None:
    cb, _ = breaker()

    assert not cb.is_open
    assert all(cb.allow() for _ in range(10))
    assert cb.last_failure is None


def test_a_failure_opens_the_circuit_and_refuses_calls_until_the_cooldown_ends() -> None:
    cb, clock = breaker(5.0)

    cb.failed("connection refused")

    assert cb.is_open
    assert cb.last_failure == "connection refused"
    assert not cb.allow()
    clock.advance(4.999)
    assert not cb.allow()


def test_after_the_cooldown_exactly_one_caller_probes_and_the_others_keep_skipping() -> None:
    cb, clock = breaker(5.0)
    cb.failed("down")
    clock.advance(5.0)

    answers = [cb.allow() for _ in range(5)]

    assert answers == [True, False, False, False, False]


def test_a_successful_probe_closes_the_circuit() -> None:
    cb, clock = breaker(5.0)
    cb.failed("down")
    clock.advance(5.0)
    assert cb.allow()

    cb.succeeded()

    assert not cb.is_open
    assert cb.last_failure is None
    assert cb.allow()
    assert cb.allow()


def test_a_failed_probe_opens_the_circuit_for_a_new_full_cooldown() -> None:
    cb, clock = breaker(5.0)
    cb.failed("down")
    clock.advance(5.0)
    assert cb.allow()

    cb.failed("still down")

    assert cb.last_failure == "still down"
    clock.advance(4.9)
    assert not cb.allow()
    clock.advance(0.1)
    assert cb.allow()


def test_a_zero_cooldown_lets_one_probe_through_at_once() -> None:
    cb, _ = breaker(0.0)
    cb.failed("down")

    assert cb.allow()
    assert not cb.allow()


def test_a_probe_in_flight_at_fork_time_does_not_block_the_child_forever() -> None:
    cb, clock = breaker(5.0)
    cb.failed("down")
    clock.advance(5.0)
    assert cb.allow()  # the parent's probe is in flight when the process forks

    cb.reset_after_fork()

    assert cb.allow()  # the child may probe on its own


def test_only_one_of_many_threads_gets_the_probe() -> None:
    cb, clock = breaker(1.0)
    cb.failed("down")
    clock.advance(1.0)
    start = threading.Barrier(16)
    answers: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        answer = cb.allow()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [False] * 15 + [True]
