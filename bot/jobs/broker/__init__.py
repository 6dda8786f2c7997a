"""The NATS JetStream transport between the bot's queue and remote ``easel worker``s."""
