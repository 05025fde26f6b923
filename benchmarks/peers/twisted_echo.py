"""
Bare Twisted echo: multiport's own Echo protocol on reactor.listenTCP, with
no per-port wrapper; the baseline for what multiport's layer costs.

    python -m benchmarks.peers.twisted_echo PORT
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory

from multiport.handlers.simple import Echo


def main() -> None:
    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    reactor.listenTCP(int(sys.argv[1]), factory, backlog=511, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
