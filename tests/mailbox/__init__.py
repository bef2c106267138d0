"""Mailbox-layer tests: mq9 semantics over the NATS protocol."""
