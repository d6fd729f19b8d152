"""The message bus: ZeroMQ transport, msgpack envelopes, membership and quorum.

Modules, one idea each:

- :mod:`bus.messages`    typed message classes and the ``kind -> class`` registry
- :mod:`bus.codec`       the versioned, size-limited, validated envelope
- :mod:`bus.transport`   the public API (send, reply, subscribe, ...) and the I/O thread
- :mod:`bus.peers`       our DEALER to each peer, sent on by any thread under its lock
- :mod:`bus.links`       the link monitor: heartbeats, PeerUp/PeerDown, quorum changes
- :mod:`bus.zap`         the ZAP handler: which member or client a CURVE key belongs to
- :mod:`bus.sockets`     every socket option (security and reachability) in one place
- :mod:`bus.subscriptions` who gets which envelope (copy-on-write routes by kind)
- :mod:`bus.handover`    frames other threads hand to the I/O thread, and its wake-up fd
- :mod:`bus.config`      the transport's tunables (``TransportConfig``)
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
