#!/bin/sh
# Restart the three instances of this machine one at a time, each drained
# first (docs/deploy.rst).  RESTART may name another command, e.g. issue 20's
# "multiport-ctl upgrade --status {status}" once it is there.
set -eu
RESTART=${RESTART:-"systemctl restart multiport@{index}"}
exec multiport-ctl --admin-token-file /etc/multiport/admin-token roll \
    --restart-command "$RESTART" \
    --settle 3 --drain-timeout 30 --ready-timeout 60 \
    127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103
