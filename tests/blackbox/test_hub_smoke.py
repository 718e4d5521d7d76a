def test_smoke(hub):
    dev = hub.add_device()
    svc = hub.add_service("reader", "allow connect\nallow subscribe moat/+/up/#\nallow receive moat/+/up/#\n")
    hub.start()
    s = hub.paho(svc)
    s.subscribe("moat/+/up/#", qos=1)
    import time; time.sleep(0.3)
    d = hub.paho(dev)
    d.publish(f"moat/{dev.id}/up/t", b"hello", qos=1).wait_for_publish(5)
    msgs = hub.wait_messages(s, 1)
    assert msgs and msgs[0].payload == b"hello"
    r = hub.mosquitto_pub(dev, f"moat/{dev.id}/up/x", "y", "-q", "1")
    assert r.returncode == 0, r.stderr
    assert len(hub.wait_messages(s, 2)) == 2
