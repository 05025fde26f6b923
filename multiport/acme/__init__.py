"""
Automatic certificates with ACME (RFC 8555): the C{[acme]} configuration,
the state kept for it, the challenges and the issuing and renewing service.
"""
