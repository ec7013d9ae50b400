"""shardcast: a Channelstream-0.7-compatible websocket broker, sharded over processes."""

__version__ = "0.1.0"
