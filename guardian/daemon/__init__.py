"""``guardian run``: the long-running daemon.

- ``loop.py``: the main loop (events, timers, checks, heals, alerts, status, notifications)
- ``watch.py``: which directories inotify watches and which checks an event concerns
- ``notify.py``: systemd's notify protocol
- ``status.py``: the status file behind ``guardian status``
- ``metrics.py``: Prometheus exposition (textfile and HTTP)
"""
