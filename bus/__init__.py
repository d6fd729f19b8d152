"""The message bus: ZeroMQ transport, msgpack envelopes, membership and quorum.

Modules, one idea each:

- :mod:`bus.messages`    typed message classes and the ``kind -> class`` registry
- :mod:`bus.codec`       the versioned, size-limited, validated envelope
- :mod:`bus.transport`   sockets, the I/O thread, subscriptions, heartbeats
- :mod:`bus.membership`  configured members and the up/down peer tracker
- :mod:`bus.quorum`      the quorum rule, as a pure function
- :mod:`bus.reliability` the outbox that re-sends UID-tagged messages until acknowledged
- :mod:`bus.keys`        CURVE key pairs (``python -m bus.keys``)
- :mod:`bus.runner`      a bare node as a process (``python -m bus.runner``)
- :mod:`bus.errors`      the exception tree

The wire contract is docs/PROTOCOL.md. Typical use::

    keys = CurveKeys.load(key_dir, "a", membership.names)
    with Transport("a", membership, cluster="c1", keys=keys) as bus:
        bus.subscribe(actor_ref.tell, [ServiceCommand])
        bus.send("b", CommandResult("vm:100", uid, 0))
"""
