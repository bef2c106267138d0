"""``python -m mq9cluster`` runs the CLI."""

from mq9cluster.cli import main

main()
