"""
Bare Twisted echo on L{multiport.io.transport.FastPort}: the same protocol as
L{benchmarks.peers.twisted_echo}, its connections L{FastServer}s.

    python -m benchmarks.peers.fast_echo PORT [--reactor NAME]

C{--reactor} installs a reactor by its plugin name first (as C{twistd
--reactor} does).
"""

import sys


def main() -> None:
    if "--reactor" in sys.argv:
        from twisted.application.reactors import installReactor

        installReactor(sys.argv[sys.argv.index("--reactor") + 1])

    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    from multiport.handlers.simple import Echo
    from multiport.io.transport import FastPort

    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    port = FastPort(int(sys.argv[1]), factory, 511, "127.0.0.1", reactor)
    port.startListening()
    reactor.run()


if __name__ == "__main__":
    main()
