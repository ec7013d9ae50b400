"""``python -m bench SCENARIO``: load-test shardcast (and, side by side, Channelstream and
Nchan)."""
from __future__ import annotations

import argparse
import asyncio
import sys
import traceback

import uvloop

from .cluster import Shape, parse_shapes
from .overload import OVERLOAD_SCENARIOS
from .progress import Progress
from .report import NOISY_CORES, metadata, print_tables, write_json, write_markdown
from .resources import QUIET_WAIT, raise_open_file_limit, wait_until_quiet
from .scenarios import SCENARIOS, label, options_for, run_scenario
from .soak import LONG_SCENARIOS, SERVER_SETTINGS
from .targets import COMPARISONS, Target, build_targets

ALL = "all"
SHORT_SCENARIOS = {**SCENARIOS, **OVERLOAD_SCENARIOS}   # what `all` runs
PLAYS = {**SHORT_SCENARIOS, **LONG_SCENARIOS}
GROUPS = {   # scenarios run one after the other, each in a mode (options it sets)
    ALL: [(name, {}) for name in SHORT_SCENARIOS],
    # What a cluster costs against one node (docs/performance.md, "Cluster").
    "cluster": [("fanout", {}), ("latency", {}), ("api", {"history": True}),
                ("churn", {"resume": True})],
}
SETTINGS = {"soak": SERVER_SETTINGS,   # server config keys a scenario (and mode) needs
            "churn --resume": SERVER_SETTINGS}
LOG_TAIL = 3000   # characters of the server's log kept with a result that saw errors


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        epilog="Options left out take the scenario's defaults (see docs/performance.md).")
    parser.add_argument("scenario", choices=[*PLAYS, *GROUPS])
    where = parser.add_argument_group("server under test (default: start shardcast here)")
    where.add_argument("--api", metavar="URL", help="a running shardcast, e.g. http://127.0.0.1:8000")
    where.add_argument("--secret", help="its secret (with --api)")
    where.add_argument("--workers", type=_shapes, default=[Shape(2)], metavar="W[,W|NxW...]",
                       help="shards of the server started here; a list runs each (default 2); "
                            "NxW: N nodes of W shards over Redis (needs --redis)")
    where.add_argument("--nodes", type=int, metavar="N",
                       help="run every W of --workers as N nodes of W shards sharing a Redis "
                            "(needs --redis)")
    where.add_argument("--redis", action="store_true",
                       help="start a redis-server here for the nodes to share (loopback, a "
                            "temporary directory, no persistence)")
    where.add_argument("--compare", choices=COMPARISONS, action="append", default=[],
                       help="run the same scenarios against Channelstream 0.7.1 or Nchan too "
                            "(repeat for both; Nchan: fanout, latency, overload, connect)")
    load = parser.add_argument_group("load")
    load.add_argument("--clients", type=int, help="websocket clients")
    load.add_argument("--channels", type=int, help="channels")
    load.add_argument("--duration", type=float, help="seconds of publishing (or connecting)")
    load.add_argument("--rate", type=float,
                      help="messages/s in total, published on schedule (open loop); 0: as fast "
                           "as accepted (overload: twice the sustainable rate, searched)")
    load.add_argument("--batch", type=int, help="messages per POST /message")
    load.add_argument("--payload", type=int, metavar="BYTES", help="padding in each message")
    load.add_argument("--loadgen-procs", type=int, metavar="P", help="load-generator processes")
    load.add_argument("--publishers", type=int, help="keep-alive publishing connections")
    load.add_argument("--window", type=int,
                      help="messages in flight end to end when publishing as fast as accepted")
    load.add_argument("--history", action="store_const", const=True,
                      help="channels keep history (store_history, history_size 1000)")
    load.add_argument("--resume", action="store_const", const=True,
                      help="churn: clients drop abruptly and resume with since= on a fresh "
                           "/connect, while messages flow to channels with history")
    load.add_argument("--retries", type=int, default=0,
                      help="wait for a quiet machine before each run, and run a scenario again "
                           "(up to this many times) when other processes kept the machine busy "
                           "during it; the quietest run is kept")
    _output_options(parser.add_argument_group("output"))
    args = parser.parse_args(argv)
    if args.api and not args.secret:
        parser.error("--api needs --secret")
    if args.resume and args.scenario != "churn":
        parser.error("--resume is a mode of churn")
    _check_nodes(parser, args)
    return args


def _output_options(out: argparse._ArgumentGroup) -> None:
    out.add_argument("--json", metavar="FILE", help="write the results as JSON")
    out.add_argument("--plot", metavar="FILE.png", help="write a PNG of the figures")
    out.add_argument("--markdown", metavar="FILE", help="write the performance page")
    out.add_argument("--cluster", metavar="FILE.json",
                     help="with --markdown: the JSON of a cluster run (python -m bench cluster), "
                          "for the page's cluster section")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_nodes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--nodes N turns every W of --workers into NxW; the nodes of a cluster need --redis."""
    if args.nodes is not None:
        if args.nodes < 1:
            parser.error("--nodes starts at 1")
        args.workers = [Shape(shape.workers, shape.nodes or args.nodes) for shape in args.workers]
    clustered = any(shape.nodes for shape in args.workers)
    if clustered and args.api:
        parser.error("--api measures a server already running; --nodes and NxW start nodes here")
    if clustered and not args.redis:
        parser.error("nodes of a cluster share a Redis: add --redis (the bench starts a "
                     "redis-server of its own)")
    if args.redis and not clustered:
        parser.error("--redis serves the nodes of --nodes N (or NxW in --workers); none given")


def _shapes(text: str) -> list[Shape]:
    try:
        return parse_shapes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


LOAD_OPTIONS = ("clients", "channels", "duration", "rate", "batch", "payload", "loadgen_procs",
                "publishers", "window", "history", "resume")


async def run_all(plays: list[tuple[str, dict]], targets: list[Target], overrides: dict,
                  ui: Progress, retries: int) -> list[dict]:
    """Each (scenario, mode) on each target."""
    results = []
    for scenario, mode in plays:
        for target in targets:
            if target.scenarios is not None and scenario not in target.scenarios:
                ui.log(f"{scenario} does not apply to {target.name}: skipped")
                continue
            ui.run(f"{scenario} @ {target.name}")
            results.append(await run_quietest(scenario, target, {**overrides, **mode}, ui,
                                              retries))
    return results


async def run_quietest(scenario: str, target: Target, overrides: dict, ui: Progress,
                       retries: int) -> dict:
    """Run once, and again (up to ``retries`` times) while other processes disturbed the
    run; keep the least disturbed result."""
    best: dict | None = None
    for _ in range(1 + retries):
        if retries:
            ui.phase("waiting for the machine to go quiet", 1)
            await asyncio.to_thread(wait_until_quiet, QUIET_WAIT)
        result = await run_once(scenario, target, overrides, ui)
        if best is None or _noise(result) < _noise(best):
            best = result
        if _noise(best) <= (False, NOISY_CORES):
            break
    return best


async def run_once(scenario: str, target: Target, overrides: dict, ui: Progress) -> dict:
    ui.phase("starting the server", 1)
    try:
        options = options_for(scenario, overrides, target)
        target.start(SETTINGS.get(label(scenario, options)))
        result = await run_scenario(scenario, PLAYS[scenario], target, options, ui)
        if result.get("errors") or result.get("errors_logged"):
            result["server_log"] = target.output()[-LOG_TAIL:]
        return result
    except Exception as error:   # one failed run must not lose the others
        ui.log(f"{scenario} @ {target.name} failed: {error}")
        ui.log(traceback.format_exc(limit=-3))
        return {"scenario": scenario, "target": target.name, "workers": target.workers,
                "failed": str(error)[:500]}
    finally:
        target.stop()


def _noise(result: dict) -> tuple[bool, float]:
    """Smaller is better: runs without errors first, then the least disturbed."""
    if "failed" in result:
        return True, float("inf")
    return bool(result.get("errors")), result.get("other_cores") or 0.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    raise_open_file_limit()
    targets = build_targets(args.workers, args.api, args.secret, args.compare)
    plays = GROUPS.get(args.scenario, [(args.scenario, {})])
    overrides = {name: getattr(args, name) for name in LOAD_OPTIONS}
    with Progress(enabled=not args.no_progress) as ui:
        results = uvloop.run(run_all(plays, targets, overrides, ui, args.retries))
    print_tables([result for result in results if "failed" not in result])
    meta = metadata(argv)
    if args.json:
        write_json(args.json, meta, results)
    if args.plot:
        from .plot import plot

        plot([result for result in results if "failed" not in result], args.plot)
    if args.markdown:
        write_markdown(args.markdown, meta, results, args.plot, args.cluster)
    return 1 if any("failed" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
