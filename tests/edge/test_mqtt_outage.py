"""MQTT at QoS 1 across a broker outage: a real mosquitto stopped and restarted mid-run."""

import json
import threading
import time

import pytest

from edgesight.edge.sinks import MqttSink

from .test_sinks import Subscriber, broker, free_port, make_frame, make_result, needs_broker, wait_until  # noqa: F401  (broker: fixture)


def frames_received(sub: Subscriber, expected: int, timeout: float) -> list:
    """Frame numbers of the results the subscriber got, until every one of ``expected`` arrived."""
    got, seen, deadline = [], set(), time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        for m in sub.take(expected - len(seen), timeout=max(0.1, deadline - time.monotonic())):
            got.append(json.loads(m.payload)["frame"])
            seen.add(got[-1])
    return got


@needs_broker
def test_mqtt_qos1_delivers_every_result_in_order_across_a_broker_restart(broker):
    # The subscriber's persistent session (QoS 1, clean_session False) is kept by the broker
    # across the restart, so it receives what the sink sends whichever reconnects first.
    sub = Subscriber(broker.port, "run/result", client_id="edgesight-outage-sub", clean=False)
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/run", qos=1, reconnect_delay=(1, 1))
    written = 0
    stop = threading.Event()

    def publish() -> None:
        nonlocal written
        while not stop.is_set():
            sink.write(make_frame(written), make_result("x", index=written), None)
            written += 1
            time.sleep(0.002)  # a camera's pace, not a timing assertion

    writer = threading.Thread(target=publish)
    try:
        assert sink.wait_connected(5)
        writer.start()
        assert wait_until(lambda: written >= 50, 10)
        broker.stop()  # mid-run: results keep coming while the broker goes away
        assert wait_until(lambda: not sink.connected, 5)
        during = written
        assert wait_until(lambda: written >= during + 300, 20)
        broker.start()
        assert sink.wait_connected(10)
        after = written
        assert wait_until(lambda: written >= after + 50, 10)
        stop.set()
        writer.join(5)
        assert sink.flush(20), "the queued results were not all acknowledged"
        assert sink.dropped == 0 and sink.published == written + 1  # every result and one label

        frames = frames_received(sub, written, timeout=20)
        firsts = list(dict.fromkeys(frames))
        assert firsts == list(range(written)), "a result is missing or out of order"
        # At least once: a repeat only re-sends a result that was in flight at the outage.
        assert len(frames) - len(firsts) <= MqttSink.WINDOW
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(5)
        sink.close()
        sub.close()


@needs_broker
def test_mqtt_queue_bound_drops_the_oldest_and_counts_them(broker, caplog):
    sub = Subscriber(broker.port, "bound/result", client_id="edgesight-bound-sub", clean=False)
    broker.stop()
    with caplog.at_level("WARNING", logger="edgesight.sinks"):
        sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/bound", qos=1, reconnect_delay=(1, 1), max_queued=5)
        try:
            t0 = time.monotonic()
            for i in range(8):  # 8 results and the first label: 9 messages for a queue of 5
                sink.write(make_frame(i), make_result("x", index=i), None)
            assert time.monotonic() - t0 < 0.2, "publishing while disconnected must not block"
            assert (sink.published, sink.dropped) == (0, 4)

            broker.start()
            assert sink.wait_connected(10)
            assert sink.flush(10)
            assert (sink.published, sink.dropped) == (5, 4)
            assert frames_received(sub, 5, timeout=10) == [3, 4, 5, 6, 7]
        finally:
            sink.close()
            sub.close()
    assert "queue of 5 unsent messages is full; the oldest are dropped" in caplog.text


def test_mqtt_qos0_without_broker_drops_and_counts():
    lossy = MqttSink(f"mqtt://127.0.0.1:{free_port()}/x", qos=0)
    for i in range(3):
        lossy.write(make_frame(i), make_result(index=i), None)
    lossy.close()
    assert (lossy.published, lossy.dropped) == (0, 4)  # 3 results + the first label


def test_mqtt_sink_is_not_put_behind_a_small_queue(tmp_path):
    # MqttSink.write only queues (its own 10,000-message queue at QoS 1/2): wrapped in the loop's
    # 8-result AsyncSink, a burst of results from a camera would be dropped before reaching it.
    from edgesight.edge.loop.config import RunConfig
    from edgesight.edge.loop.session import make_sinks
    from edgesight.edge.sinks import AsyncSink, JsonlSink

    cfg = RunConfig(source="0", mqtt=f"mqtt://127.0.0.1:{free_port()}/run", mqtt_qos=1, quiet=True, jsonl=str(tmp_path / "r.jsonl"))
    sinks = make_sinks(cfg)
    try:
        kinds = sorted(type(s).__name__ for s in sinks)
        assert kinds == ["AsyncSink", "MqttSink"]
        assert isinstance(next(s for s in sinks if isinstance(s, AsyncSink)).inner, JsonlSink)
        # A burst far beyond the small queue's 8 results, with the broker unreachable: every
        # QoS 1 result is kept in the sink's own queue, none is dropped.
        mqtt = next(s for s in sinks if type(s).__name__ == "MqttSink")
        for i in range(500):
            mqtt.write(make_frame(i), make_result("x", index=i), None)
        assert mqtt.dropped == 0
    finally:
        for s in sinks:
            s.close()
