#!/bin/sh
# Upgrade the three instances of this machine one at a time, each drained
# first (docs/deploy.rst); with RESTART set (e.g. "systemctl restart
# multiport@{index}"), restart each with that command instead.
set -eu
if [ -n "${RESTART:-}" ]; then
    set -- --restart-command "$RESTART"
else
    set -- --upgrade
fi
exec multiport-ctl --admin-token-file /etc/multiport/admin-token roll "$@" \
    --settle 3 --drain-timeout 30 --ready-timeout 60 \
    127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103
