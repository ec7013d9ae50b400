"""Allow ``python -m shardcast``."""

from shardcast import cli

cli.main()
