"""
Moving bytes: multiport's transport and reactor, and splice(2).
"""
