"""
multiport's reactor, for C{twistd --reactor multiport-epoll}.
"""

from twisted.application.reactors import Reactor

multiportEPoll = Reactor(
    "multiport-epoll",
    "multiport.io.reactor",
    "epoll with a cheaper per-event dispatch (Linux)",
)
