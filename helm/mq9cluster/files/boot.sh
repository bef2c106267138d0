#!/bin/sh
# Entry command of every mq9cluster pod (the StatefulSet runs `sh boot.sh` from the ConfigMap).
#
# A pod whose ordinal is below BOOT_INITIAL_MEMBERS is an initial member: it starts with the other
# initial members as static peers (MQ9_PEERS); a restart brings it back as the same member, its
# membership read back from the Raft journal on its volume. Any later pod joins the running
# cluster through the initial members (tried in order), retrying for BOOT_JOIN_WAIT seconds; run
# again after a restart, `join` finds the pod is a member already and just starts it.
# The broker replaces this shell (exec), so it gets the pod's signals itself.
set -eu

ordinal="${POD_NAME##*-}"
case "$ordinal" in
    '' | *[!0-9]*)
        echo "boot: no ordinal at the end of POD_NAME '$POD_NAME'" >&2
        exit 2
        ;;
esac
config="$(dirname "$0")/mq9cluster.json"

if [ "$ordinal" -lt "$BOOT_INITIAL_MEMBERS" ]; then
    exec mq9cluster start -c "$config"
fi
exec mq9cluster join -c "$config" --seed "$MQ9_PEERS" --join-wait "$BOOT_JOIN_WAIT"
