"""mq9cluster: a clustered mq9 message broker for AI agents, speaking the NATS protocol."""

__version__ = "0.1.0"
