"""
One listening port: the per-port wrapper where connections are admitted,
limited, counted and logged; TLS contexts and the PROXY protocol.
"""
