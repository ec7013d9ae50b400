"""Run Channelstream 0.7.1 for the benchmark, without its flash policy server.

This file runs under the interpreter of Channelstream's own virtual environment (see
``bench.targets``), so it imports nothing from shardcast or bench. It serves the same
routing WSGI application as the ``channelstream`` console script (HTTP API and ``/ws`` on
one port, gevent + ws4py) and starts the same connection/user garbage collectors, but
binds no policy server on port 10843, so several instances and other tools can coexist.
"""

import argparse
import collections
import collections.abc

# Channelstream 0.7.1 still uses collections.Mapping, removed in Python 3.10.
for _name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from gevent import monkey  # noqa: E402  (must patch before anything opens sockets)

monkey.patch_all()

import copy  # noqa: E402
import logging  # noqa: E402

import gevent  # noqa: E402
from channelstream.cli import SHARED_DEFAULTS  # noqa: E402
from channelstream.cli.start import RoutingApplication  # noqa: E402
from channelstream.gc import gc_conns_forever, gc_users_forever  # noqa: E402
from channelstream.utils import set_config_types  # noqa: E402
from ws4py.server.geventserver import WSGIServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    config = copy.deepcopy(SHARED_DEFAULTS)
    config.update(host=args.host, port=args.port, secret=args.secret,
                  log_level=args.log_level)
    config = set_config_types(config)
    logging.basicConfig(level=args.log_level.upper())
    gevent.spawn(gc_conns_forever)
    gevent.spawn(gc_users_forever)
    server = WSGIServer((config["host"], config["port"]), RoutingApplication(config),
                        log=logging.getLogger("channelstream.WSGIServer"))
    print(f"channelstream on http://{config['host']}:{config['port']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
