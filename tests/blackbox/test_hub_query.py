"""Services read stored telemetry over MQTT 5 request/response (issue 6,
docs/telemetry.md "Queries from services").

A service publishes a JSON request to $moat/telemetry/query with a Response
Topic and Correlation Data; the hub answers on the response topic, to that
session only, with the correlation data and one bounded page. What is
checked: pages follow each other through the cursor until every reading
was read once, in order; stream and time filters; a service that may not
receive a device's topics gets "forbidden" and no reading; a service that
may not publish the query, and any device, is refused; another service
subscribed to the same response topic gets nothing; malformed requests get
an error answer; the hub answers while serving its devices.
"""
import base64
import json
import time

import paho.mqtt.client as mqtt
import pytest

import mqttwire as mw

QUERY = "$moat/telemetry/query"
RESPONSE_TOPIC, CORRELATION = 0x08, 0x09

READER = ("allow connect\n"
          "allow publish $moat/telemetry/query\n"
          "allow subscribe replies/${service}/#\n"
          "allow receive replies/${service}/#\n"
          "allow receive moat/+/up/#\n")


def store(hub, dev, items):
    """Readings as a device publishes them; returns after every PUBACK."""
    c = mw.RawClient.open(hub, dev)
    c.connect(dev.id)
    for pid, (stream, payload) in enumerate(items, start=1):
        c.publish(f"moat/{dev.id}/up/{stream}", payload, qos=1, pid=pid)
        assert c.expect(mw.PUBACK).packet_id == pid
        time.sleep(0.002)  # distinct receive times
    c.close()


class Asker:
    """A service session that asks and collects answers by correlation."""

    def __init__(self, hub, svc, reply_topic=None):
        self.hub = hub
        self.reply = reply_topic or f"replies/{svc.id}/q"
        self.c = hub.paho(svc)
        rc, _ = self.c.subscribe(self.reply, qos=1)
        assert rc == 0
        time.sleep(0.3)
        self.n = 0

    def ask(self, request, timeout=10.0):
        self.n += 1
        corr = b"corr-%d" % self.n
        props = self.hub.props("PUBLISH", ResponseTopic=self.reply, CorrelationData=corr)
        payload = request if isinstance(request, bytes) else json.dumps(request).encode()
        self.c.publish(QUERY, payload, qos=1, properties=props).wait_for_publish(5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.c.messages):
                if getattr(m.properties, "CorrelationData", None) == corr:
                    self.c.messages.remove(m)
                    assert m.topic == self.reply
                    assert m.properties.ContentType == "application/json"
                    return json.loads(m.payload)
            time.sleep(0.02)
        raise AssertionError(f"no answer to {request!r}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def all_pages(asker, request):
    pages, after = [], None
    for _ in range(50):
        req = dict(request)
        if after:
            req["after"] = after
        page = asker.ask(req)
        assert "error" not in page, page
        pages.append(page)
        after = page["next"]
        if after is None:
            return pages
    raise AssertionError("the cursor never ended")


def test_pages_follow_each_other_until_every_reading_was_read(hub):
    dev = hub.add_device()
    svc = hub.add_service("reader", READER)
    hub.start()
    items = [("temp", b"t%d" % i) for i in range(7)] + [("door", b"open"), ("door", b"\x00\xff")]
    store(hub, dev, items)
    a = Asker(hub, svc)
    pages = all_pages(a, {"device": dev.id, "limit": 3})
    assert [len(p["readings"]) for p in pages] == [3, 3, 3]
    got = [(r["stream"], base64.b64decode(r["payload"])) for p in pages for r in p["readings"]]
    assert got == items  # in order, each once, binary payloads intact
    assert all(p["device"] == dev.id and p["count"] == len(p["readings"]) for p in pages)
    received = [r["received_ms"] for p in pages for r in p["readings"]]
    assert received == sorted(received)
    # Only what one stream holds, and a window in time.
    door = all_pages(a, {"device": dev.id, "stream": "door"})
    assert [base64.b64decode(r["payload"]) for p in door for r in p["readings"]] == \
        [b"open", b"\x00\xff"]
    mid = received[3]
    window = a.ask({"device": dev.id, "since": mid, "until": received[6]})
    assert [r["received_ms"] for r in window["readings"]] == received[3:6]
    newest = a.ask({"device": dev.id, "limit": 1, "newest_first": True})
    assert base64.b64decode(newest["readings"][0]["payload"]) == b"\x00\xff"
    a.close()


def test_page_sizes_are_bounded(hub):
    dev = hub.add_device()
    svc = hub.add_service("reader", READER)
    hub.set_config("limits", "max_publish_rate", "0")
    hub.start()
    store(hub, dev, [("blob", b"x" * 60000) for _ in range(6)])
    a = Asker(hub, svc)
    assert a.ask({"device": dev.id, "limit": 501})["error"] == "bad_request"
    page = a.ask({"device": dev.id, "limit": 500})
    # 256 KiB of payload per answer at most: four of the six.
    assert len(page["readings"]) == 4 and page["next"]
    rest = a.ask({"device": dev.id, "limit": 500, "after": page["next"]})
    assert len(rest["readings"]) == 2 and rest["next"] is None
    a.close()


def test_a_service_that_may_not_receive_the_device_gets_forbidden(hub):
    dev, other = hub.add_device(), hub.add_device()
    narrow = hub.add_service("narrow", "allow connect\n"
                                       "allow publish $moat/telemetry/query\n"
                                       "allow subscribe replies/${service}/#\n"
                                       "allow receive replies/${service}/#\n"
                                       f"allow receive moat/{other.id}/up/#\n"
                                       f"deny receive moat/{other.id}/up/secret\n")
    hub.start()
    store(hub, dev, [("temp", b"private")])
    store(hub, other, [("temp", b"fine"), ("secret", b"hidden")])
    a = Asker(hub, narrow)
    for req in ({"device": dev.id}, {"device": dev.id, "stream": "temp"},
                {"device": other.id, "stream": "secret"}):
        answer = a.ask(req)
        assert answer["error"] == "forbidden", (req, answer)
        assert "readings" not in answer
    # What it may receive it reads; a denied stream is left out.
    page = a.ask({"device": other.id})
    assert [base64.b64decode(r["payload"]) for r in page["readings"]] == [b"fine"]
    a.close()


def test_services_without_the_query_permission_and_devices_are_refused(hub):
    dev = hub.add_device()
    hub.add_policy("devices-may-ask", "allow publish $moat/telemetry/query\n")
    hub.moatctl("group", "attach", "devices-may-ask", "devices")
    plain = hub.add_service("plain", "allow connect\nallow subscribe replies/#\n"
                                     "allow receive replies/#\nallow receive moat/#\n")
    hub.start()
    store(hub, dev, [("temp", b"1")])
    props = [(RESPONSE_TOPIC, "replies/x"), (CORRELATION, b"c")]
    request = json.dumps({"device": dev.id}).encode()
    # A service whose policy does not allow publishing the query.
    s = mw.RawClient.open(hub, plain)
    s.connect("plain")
    s.send_subscribe([("replies/#", 1)], pid=1)
    s.expect(mw.SUBACK)
    s.publish(QUERY, request, qos=1, pid=2, props=props)
    assert s.expect(mw.PUBACK).reason == 0x87
    # A device, even where a policy lets it publish there.
    d = mw.RawClient.open(hub, dev)
    d.connect(dev.id)
    d.publish(QUERY, request, qos=1, pid=1, props=props)
    assert d.expect(mw.PUBACK).reason == 0x87
    d.close()
    assert [p for p in s.quiet(1.0) if p.type == mw.PUBLISH] == []
    s.close()


def test_the_answer_goes_to_the_requester_only(hub):
    dev = hub.add_device()
    asker = hub.add_service("asker", READER.replace("${service}/#", "#"))
    snoop = hub.add_service("snoop", "allow connect\nallow subscribe replies/#\n"
                                     "allow receive replies/#\n")
    hub.start()
    store(hub, dev, [("temp", b"for asker only")])
    spy = hub.paho(snoop)
    spy.subscribe("replies/#", qos=1)
    time.sleep(0.3)
    a = Asker(hub, asker, reply_topic="replies/shared")
    page = a.ask({"device": dev.id})
    assert base64.b64decode(page["readings"][0]["payload"]) == b"for asker only"
    time.sleep(0.5)
    assert spy.messages == []
    a.close()
    spy.disconnect()


def test_malformed_requests_get_an_error_answer(hub):
    dev = hub.add_device()
    svc = hub.add_service("reader", READER)
    hub.start()
    a = Asker(hub, svc)
    for bad in (b"not json", b"[1,2]", {"device": "x" * 64}, {"device": 5},
                {"device": dev.id, "bogus": 1},
                {"device": dev.id, "after": "yesterday"}, {"device": dev.id, "since": "now"},
                {"device": dev.id, "limit": 0}, b"{" + b" " * 5000 + b"}"):
        answer = a.ask(bad)
        assert answer["error"] == "bad_request", (bad, answer)
    # An unknown device is no error: nothing is stored for it.
    assert a.ask({"device": "a" * 26})["readings"] == []
    a.close()


def test_a_query_needs_a_response_topic(hub):
    dev = hub.add_device()
    svc = hub.add_service("reader", READER)
    hub.start()
    s = mw.RawClient.open(hub, svc)
    s.connect("reader")
    s.publish(QUERY, json.dumps({"device": dev.id}), qos=1, pid=1)
    assert s.expect(mw.PUBACK).reason == 0x83
    s.close()


@pytest.mark.parametrize("workers", ["1", "3"])
def test_queries_while_devices_publish(hub, workers):
    """Answers come back on the right worker while readings keep arriving."""
    hub.set_config("hub", "workers", workers)
    hub.set_config("limits", "max_publish_rate", "0")
    devs = [hub.add_device() for _ in range(3)]
    svc = hub.add_service("reader", READER)
    hub.start()
    clients = []
    for d in devs:
        c = mw.RawClient.open(hub, d)
        c.connect(d.id)
        clients.append(c)
    a = Asker(hub, svc)
    for i in range(40):
        for d, c in zip(devs, clients):
            c.publish(f"moat/{d.id}/up/n", b"%d" % i, qos=1, pid=i + 1)
        if i % 10 == 9:
            page = a.ask({"device": devs[i % 3].id, "limit": 500})
            assert "error" not in page
    for c in clients:
        for _ in range(40):
            c.expect(mw.PUBACK)
        c.close()
    for d in devs:
        pages = all_pages(a, {"device": d.id, "limit": 7})
        assert [int(base64.b64decode(r["payload"])) for p in pages for r in p["readings"]] == \
            list(range(40))
    a.close()
