"""
The running daemon: twistd options, the service tree and its control,
workers, signals and logging.
"""
