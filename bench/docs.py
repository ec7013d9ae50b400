"""docs/performance.md: the method, the results tables and the plot, all from one run, and
a section for a cluster from a second run (``--cluster``)."""
from __future__ import annotations

from .goals import FANOUT_SHARE, HISTORY_RATE, LATENCY_ADDED_MS, goal_lines, node_goal_lines

CLUSTER_RUN = ("python -m bench cluster --workers 2,3x1 --redis --retries 2 "
               "--json docs/perf-cluster.json")
REGENERATE = ("python -m bench all --workers 1,2 --compare channelstream --compare nchan "
              "--retries 2 --json docs/perf.json --plot docs/performance.png "
              "--markdown docs/performance.md --cluster docs/perf-cluster.json")

METHOD = """\
## How to run

From the repository root, with the bench extra installed (`pip install -e '.[bench]'`):

```sh
python -m bench SCENARIO [--api URL --secret S | --workers N[,N...]] [--clients N] [--channels N]
                [--duration S] [--rate R] [--batch B] [--payload BYTES] [--loadgen-procs P]
                [--publishers K] [--window W] [--compare channelstream] [--compare nchan]
                [--retries N] [--nodes N --redis] [--history] [--resume]
                [--json FILE] [--plot FILE.png] [--markdown FILE [--cluster FILE]]
                [--no-progress]
```

Without `--api` the bench starts `python -m shardcast serve --workers N` on free loopback ports
for each scenario and stops it afterwards (`--workers 1,2` runs every scenario once per count).
`--api URL --secret S` measures a server that is already running; its CPU and memory are read
only if it runs on this machine (found through the shard pids of `/admin/admin.json`).
`--compare channelstream` installs Channelstream 0.7.1 from PyPI into a cached virtual
environment (`~/.cache/shardcast-bench/channelstream-0.7.1`, once) and runs the same scenarios
against it through `bench/channelstream_app.py`, which serves the application of its
`channelstream` command (gevent, ws4py, HTTP API and `/ws` on one port) without the flash
policy server on port 10843, and aliases `collections.Mapping` for Python ≥ 3.10.
Channelstream has no `ws_url`: its clients open `ws://host:port/ws?conn_id=...`.

`--compare nchan` runs `fanout`, `latency`, `overload` and `connect` against Nchan (the nginx
module, in C; Debian's `nginx-light` and `libnginx-mod-nchan`, 1.3.6 on Debian 12), which it
installs with `apt-get` when missing (as root; otherwise it says the command to run); an nginx
service that the installation starts is stopped and disabled, and none is ever used. For each
scenario the bench starts an nginx of its own (`bench/nchan.py`): a generated configuration in a
temporary prefix, `daemon off` under the bench, 2 worker processes, one free loopback port,
publishers posting each message to `/pub/<channel>` (`nchan_publisher http`), subscribers
opening `ws /sub/<channel>` (`nchan_subscriber websocket`, first message `newest`), Nchan's
default message buffer (10 per channel), and keep-alive connections allowed any number of
requests (nginx closes one after 1,000 by default, cutting off a publisher's pipelined
requests). Nchan publishes one message per request (`--batch 1`), has no `/connect`, presence
or connections in several channels (its multiplexed subscribers get frames that do not name
their channel), so `channels`, `api`, `churn` and `soak` do not apply to it. Its `connect`
storm only opens websockets, where shardcast's and Channelstream's clients call `/connect`
first: compare its `conn_per_s` and `server_cpu_us_per_conn` with that in mind. Reading and
checking Nchan's frames costs the generators more than twice the CPU Nchan spends sending them,
so on a small machine its `delivered_msgs_per_s` (and its sustainable rate) is bounded by the
generators sharing the cores; its `server_cpu_us_per_msg` is the figure that carries over.

`python -m bench fanout` alone takes about 15 s; `python -m bench overload` one to three minutes
per target, most of it the search for the sustainable rate (`--rate R` skips it). `python -m
bench.report docs/perf.json --markdown docs/performance.md --plot docs/performance.png` renders
a saved run again.

`/connect` answers with the member list (and states) of every channel it joins, as Channelstream
does, so connecting N clients to one channel costs O(N²) on either server; `connect` spreads
its clients over 100 channels to measure the connection itself (`--channels 1` shows the
other case).

## Scenarios

| scenario | load | defaults |
|---|---|---|
| `fanout` | N subscribers of one channel; messages published as fast as the server takes them, or on schedule with `--rate` | 1,000 clients, 1 message per POST, 10 s |
| `channels` | many channels, each client in 3 of them; publishes spread round-robin over the channels | 1,000 clients, 100 channels, 2 publishing connections |
| `latency` | fixed publish rate (open loop), end-to-end latency percentiles | 100 clients × 200 msg/s on one channel |
| `connect` | storm of `/connect` + websocket opens (64 in flight per generator process), each client joining one of the channels, then RSS per idle connection | 1,000 connections over 100 channels |
| `api` | `POST /message` throughput to a channel with no subscribers, closed loop on keep-alive connections | 8 connections from one generator process, 1 message per POST, 10 s |
| `churn` | 16 loops connect → open websocket → stay 0-10 ms → close + `/disconnect` on presence channels, while messages flow to stable subscribers | 200 subscribers, 10 channels, 50 msg/s |
| `churn --resume` | 32 resumers drop their websocket abruptly and resume with `since=` on a fresh `/connect`, while messages flow to channels with history (see "Cluster") | 40 subscribers, 4 channels, 400 msg/s |
| `soak` | `churn`'s join/leave loops and a steady publish rate, first for a warm-up (a quarter of `--duration`, at most 10 s), then for `--duration`; the server's RSS and open file descriptors after each, and the error lines in its log | 200 subscribers, 10 channels, 50 msg/s, 60 s |
| `overload` | N subscribers of one channel, published on schedule at twice the highest sustainable rate (searched, see below; `--rate` sets the rate and skips the search): socket buffers fill and slow consumers are closed | 1,000 clients, 1 message per POST, 6 s; search steps of 3 s |
| `all` | all of the above except `soak` (it is long) and `churn --resume`, one after the other | |
| `cluster` | `fanout`, `latency`, `api --history` (the channel keeps history) and `churn --resume`: what a cluster costs against one node (see "Cluster") | |

## How the figures are measured

* **Load generators** are separate processes (aiomultiprocess + uvloop): `--loadgen-procs`
  (default 2; in Nchan's `fanout` and `overload` one per core, at least 2: it sends a frame per
  message, and reading and checking one costs a generator about 5 µs, more than twice what Nchan
  spends on it) subscriber processes holding picows websocket clients, one publisher process,
  and for `churn` one churn process; `api` posts from one process (`--loadgen-procs` splits its
  connections over more), as one drives 8 connections with about 0.65 of a core while two took
  0.85 between them, CPU the server then lacked on a small machine. They open their clients
  first; the coordinator then starts the measured phase in all of them at once through shared
  memory. Each reports its own CPU time (`getrusage`) over that phase; a process above 90 % of a
  core is flagged (`loadgen_saturated`), as its figures may measure the generator rather than
  the server.
* **Publishers** post with a small keep-alive HTTP/1.1 client on asyncio and httptools,
  `--batch` messages per `POST /message`. "As fast as the server accepts" (`fanout`,
  `channels`) is a closed loop, one request in flight per connection, limited to `--window`
  messages (default 50) in flight end to end, i.e. published but not yet received by all their
  subscribers; without that bound the backlog, not the server, would set the figures and a run
  could not drain in time. It never fills a socket buffer, so it cannot show what a server does
  when its subscribers fall behind. `--rate R` switches to an open loop: messages have their
  times in a fixed schedule of R per second over all connections and leave then, whatever the
  earlier answers did (requests are pipelined on the keep-alive connection; the API answers
  without waiting for delivery), carrying their scheduled time, so a server that falls behind
  shows it as latency and nothing holds the publisher back. A publisher that itself runs late
  sends all that is due at once and stops at the deadline: `target_msgs_per_s` is R,
  `offered_msgs_per_s` what it did send per second, and a run where that is below 95 % of R is
  flagged in the notes.
* **Every message is counted.** Each message carries `{"p": publisher, "s": sequence, "t": send
  time, "pad": padding}`; every client checks the sequence per (channel, publisher): `delivered`
  counts distinct messages received, `duplicated` repeats, `out_of_order` late arrivals of a
  skipped number, `lost` = expected − delivered, where expected = Σ over accepted messages of
  the subscribers of their channel, except that a client that closed early is owed only the
  messages up to the last it received of each publisher (so a gap before that is lost); what
  early closes cut off is `cut_off`. After publishing stops the bench waits for the deliveries
  to drain (until all arrived, 3 s without any, or 30 s).
* **Every frame is checked**, not only counted: it must be valid UTF-8 JSON, an array of
  envelopes, and each message envelope exactly what was published: `type` "message", a channel
  the client joined, `user` "bench", `uuid` and `timestamp` strings, `catchup` false, `edited`
  null, and a `message` holding exactly `p`, `s` (≥ 0), `t` (not after its receipt) and the
  run's padding (msgspec checks it while decoding). Nchan sends each message as a frame of its
  own holding the body that was posted: it must be that body byte for byte (decoded with the
  same strict schema, then written again as the publisher wrote it, the bytes must match). A
  client that receives a bad frame, or one picows cannot parse (a bad opcode, a fragmented
  control frame, …), closes with 1002 as a browser would drop a connection it cannot read:
  `protocol_errors` counts those clients, and the notes quote the first reasons.
  `slow_consumer_closes` counts the clients the server closed with 3008 (too slow to keep up),
  `dropped_connections` those closed otherwise (the notes say whether a close frame came). A
  server that aborts a slow consumer's socket before it read the 3008 frame queued behind its
  backlog shows as a drop without a close frame; for shardcast, `server_slow_consumer_closes` is
  its own count (`/admin/admin.json`) over the run. Every scenario with websocket clients
  reports these counts.
* **Sustainable rate and overload** (`overload`): a rate is sustained when a 3 s open-loop run
  at it, on a fresh server with fresh subscribers, delivers every message to every client (by
  2 s after the last was published: a backlog that outlasts that has broken the latency bound,
  and a server far behind would take minutes to drain; what has not arrived counts as lost),
  closes none (not even as a slow consumer: the fan-out is to all 1,000), keeps the latency p99
  within 100 ms, and the publisher kept its schedule. The search starts at 200,000 deliveries/s
  (200 msg/s to 1,000 clients), doubles while rates are sustained (halves while not), then
  bisects the bracket geometrically until it is narrower than 1.25×, within 8 runs and 150 s;
  a step that failed while other processes kept more than a quarter of a core busy runs once
  more after waiting (up to 30 s) for a quiet machine, and the quieter run counts.
  `sustainable_msgs_per_s` is the highest rate sustained, `unsustainable_msgs_per_s` the lowest
  that was not; the rates tried are listed under the table. The scenario then publishes at
  twice the sustainable rate for `--duration` (6 s), so every server is measured at the same
  relative overload: backlogs grow, and whatever the server does about them (latency, closing
  slow consumers), nothing may arrive corrupted, duplicated or out of order. A higher `--rate`
  fills the socket buffers for sure: issue 9 (frames corrupted under overload, clients failing
  with "invalid opcode") shows with `python -m bench overload --workers 2 --rate 8000`. There
  no socket keeps up, and what the kernel holds for each counts: with Linux's own sizing of
  a loopback socket (`kernel_send_buffer = 0`), the 1,000 sockets drove the host's TCP memory
  to its hard limit (`net.ipv4.tcp_mem`), where the kernel drops packets on every socket, and
  a 3008 could still wait in a stalled retransmission when the run ended.
* **Throughput**: `delivered_msgs_per_s` = delivered messages (one per subscriber) / (last
  receipt − first publish); `published_msgs_per_s` = accepted messages / publishing time;
  `req_per_s` = answered requests / posting time.
* **Coalescing**: `msgs_per_frame` = messages per websocket frame received. shardcast merges
  what one connection gets between two flushes of its shard into one frame; Channelstream and
  Nchan send a frame per message. Under saturation bigger batches cost less CPU per message, so compare
  `server_cpu_us_per_msg` of runs with similar `msgs_per_frame`, and `server_cpu_us_per_frame`
  for the cost of each socket write.
* **Latency**: receive time − send time, both CLOCK_MONOTONIC (shared by all processes of the
  machine), in mergeable log buckets of 1 % width; p50/p90/p99/max.
* **Server CPU**: user + system CPU time of the server process and all its descendants (the
  supervisor, the API processes and the shards; for Channelstream its one process; for Nchan
  the nginx master and its workers), read with psutil at the start and the end of the measured
  phase. `server_cpu_us_per_msg` = CPU µs / delivered messages (for `api`: / accepted messages;
  for `connect`: `server_cpu_us_per_conn`); `server_cpu_us_per_frame` = CPU µs / websocket
  frames that carried messages to the subscribers. `server_cores` = CPU seconds / wall seconds.
  For a shardcast node, `api_cpu_us_per_msg` and `shards_cpu_us_per_msg` (`_per_conn` for
  `connect`) split it: the processes listening on the API port, and those listening on the
  websocket ports (the supervisor, listening on neither, takes the rest, near nothing).
* **Soak** (`python -m bench soak`, about 80 s; `--duration` sets the measured phase): the
  stable subscribers stay connected throughout; each phase's publisher and churner are processes
  that exit with it, so at both readings the bench holds the same connections open. The
  bench's own server runs with `gc_conns_after = 2`, `gc_users_after = 2` and
  `heartbeat_interval = 1`: connections whose websocket never opened, and the users of the
  churn (a new one per cycle, otherwise remembered for a day by design, about 0.5 KB each), are
  forgotten within seconds. After each phase (and the drain) the bench waits, at most 30 s,
  until `/admin/admin.json` counts only the stable connections and no user without one, waits
  1 s more, then sums RSS and open file descriptors (psutil, i.e. `/proc/PID/status` and
  `/proc/PID/fd`) over the supervisor and all its descendants: `rss_start_mb`, `fds_start`
  after the warm-up, `rss_end_mb`, `fds_end` at the end, `rss_growth_mb` the difference (MiB;
  `rss_growth_by_process_mb` per process).
  `errors_logged` counts the lines of the server's log that contain `ERROR` or `Traceback`
  (the first five are kept as `server_errors`, the log's tail as `server_log`).
  `returned_to_baseline` is yes when the fds came back exactly and RSS within 8 MiB; otherwise,
  and for a logged error or connections that did not go, the notes (and `baseline_warnings` in
  the JSON) say what did not return. `delivered`, `lost`, `duplicated`, `out_of_order` count
  the stable subscribers' messages of both phases; `churn_cycles` counts both phases' cycles.
  A soak run needs `--rate` above 0.
* **RSS per idle connection** (`connect`): (RSS of all server processes 1 s after the last
  websocket opened − RSS before the storm) / connections. Memory freed before the storm is
  reused by it, so a server that compiled its modules at start (no `.pyc` files, e.g. an
  editable install with `PYTHONDONTWRITEBYTECODE`) reads about 0.7 KB lower; the figures here
  are taken with the bytecode compiled, as after `pip install`.
* **TCP quick ACKs.** Channelstream's server (gevent pywsgi) writes a response's headers and
  body in two segments without TCP_NODELAY, so on a keep-alive connection every response waits
  for the client's delayed ACK: about 44 ms per request with curl, requests or any plain
  client (~23 requests/s per connection). The bench client switches the socket to quick-ACK
  mode after each request so that both servers are measured on their work, not on that timer.
  Backends that talk to Channelstream over keep-alive connections do pay it.
* **Kernel time on loopback.** Over 127.0.0.1 a write that sends a segment at once also runs
  the receiving side's TCP input in the writer's process; a write to a socket whose reader is
  behind only queues, and the segments leave later, several frames each, on the reader's CPU
  time (its window updates). So `server_cpu_us_per_frame` of a server whose readers keep up
  includes much of the readers' kernel work, and one whose readers lag does not. Measured with
  `perf record -a` during `fanout --workers 2 --compare nchan` (one run): a shardcast shard
  spent 69 % of its CPU in `write()`, 24 points of it in the readers' `tcp_v4_rcv`; an nginx
  worker 50 % in `writev()`, 5.5 points in `tcp_v4_rcv`. Kernel time of all processes
  (server and generators) came to 8.0 µs per frame and 1.9 µs per delivered message for
  shardcast (4.2 messages a frame), 3.2 µs per frame and per message for Nchan.
* **Noise**: the bench also reads the machine's total busy CPU time; what neither the server nor
  the bench used is reported as `other_cores`, and a run where other processes kept more than
  a quarter of a core busy is flagged in the notes. `--retries N` waits (up to 30 s) for a
  quiet machine before each run and repeats a disturbed run up to N times, keeping the
  quietest.
* **Limits**: the open-file limit is raised to the hard limit in every process; every loop is
  bounded by time (`--duration`, plus at most 180 s for start, drain and, in `soak`, the
  warm-up and the waits for the server to settle) and by count (2 million
  messages per publisher process, 200,000 churn cycles per churn process). All traffic stays on
  127.0.0.1.

The server and the load generators share the machine's cores, so absolute rates are a floor
for a machine where the clients live elsewhere; `server_cpu_us_per_msg` is the figure that
carries over. To see where a server process spends its time, run a long scenario and point
py-spy at the supervisor or a shard (pids in `/admin/admin.json`):
`py-spy record --native -d 10 -o profile.svg --pid PID` or `py-spy top --pid PID`.
"""

CLUSTER_METHOD = f"""\
## Cluster

`python -m bench SCENARIO --nodes N --redis` measures a cluster: the bench starts a `redis-server`
of its own (in a temporary directory, on a free loopback port, without persistence; never a
system service) and N nodes sharing it, each `shardcast serve --redis-url ... --node-id nodeI`
with its own API and websocket ports and `--workers` shards, and stops them all after each
scenario (Redis too: every scenario starts on an empty Redis). An item `NxW` of `--workers` is N
nodes of W shards each, so one run measures one node and a cluster side by side:
`{CLUSTER_RUN}`.

* **Spread**: subscribers connect through the nodes' APIs in turn (client i through node i mod N)
  and open the `ws_url` each answer names, so they are spread evenly over the nodes
  (`clients_by_node` in the JSON). Publishing connections post through the nodes in turn too:
  with one publisher (the default) every message is posted to node 0 and reaches the other
  nodes' subscribers through Redis. `api` posts through node 0 only: what one node's API takes.
* **CPU**: a cluster's server CPU is its nodes' (supervisors, API processes, shards) and Redis'
  together, so `server_cpu_us_per_msg` compares what the whole broker spends; `nodes_cores` and
  `redis_cores` split it. `redis_cpu_us_per_publish` is the CPU of the `redis-server` process
  over the measured phase divided by the messages accepted: Redis runs commands on one
  thread, so this bounds a cluster's publish rate. It is lowest when publishes come in quick
  succession (Redis reads and answers them in batches) and highest when each comes alone
  (each then costs its own reads and writes, and a pub/sub write to every subscribed shard):
  compare it between runs of similar publish rates (`api --history` runs the fastest).
* **History**: `--history` makes the scenario's channels keep history (`store_history`,
  `history_size` 1000); `api --history` posts to such a channel.
* **Resume** (`churn --resume`): besides the stable subscribers, 32 resumers (`--churners`),
  each subscribed to one channel (with history; 400 msg/s over 4 channels, so a resumer misses a
  few messages each time; few stable subscribers, so that the resumes' CPU stands out). A
  resumer opens its websocket with `offsets=1` before publishing starts, so it is owed every
  message; then, until the publishing stops, it keeps its websocket 0-200 ms, drops it abruptly
  (the TCP connection closes without a close frame), stays away 0-100 ms while messages flow,
  and comes back on a fresh `/connect` (through the next node) whose websocket URL carries
  `since=` with the epoch and offset of the last message it got, as the browser client does.
  That `/connect` asks for no history in its answer (`info.include_history` false), which would
  otherwise carry up to `history_size` (1,000) entries: what was missed comes through `since`.
  The resumed websocket must first send a recovery frame saying `recovered` in the epoch the
  resumer had (`resume_failures` otherwise); every message is checked field by field as in the
  other scenarios (catch-up ones say `catchup: true`), by the publisher's numbering across all
  the resumer's websockets (`lost`, `duplicated`, `out_of_order`, counted with the stable
  subscribers'), and by its position: each must be the next offset of its channel, in the same
  epoch (`position_errors`). `caught_up` counts the messages received as catch-up;
  `resume_p50_ms` is the time from the new `/connect` to the recovery frame. The scenario runs
  twice on the same server, first without drops (the resumers stay on their first websocket;
  channels of its own), then with: `server_cpu_us_per_resume` is the server CPU the second run
  used beyond the first, divided by its resumes (and so per part in a cluster). The bench's
  server forgets a connection 2 s after its last sign of life (`gc_conns_after = 2`, heartbeats
  every second, as in `soak`) and each run's measured phase lasts 3 s past its drain
  (`--duration` if shorter), so the cost includes forgetting the dropped connection, which until
  then holds what its channel publishes (for `gc_conns_after`, 15 s by default, on a real
  server).
* **Targets**: the section ends with the targets a cluster is held to, each said met or not: a
  fan-out at least {FANOUT_SHARE:g}× one node's (2 shards), a latency p99 at most
  {LATENCY_ADDED_MS:g} ms above one node's, at least {HISTORY_RATE:,} publishes/s with history
  through one node, and no message lost, repeated or out of place across resumes.
"""


NODE_TARGETS_NOTE = """\
Where the missed ones stand (measured on this host, 2026-12-01):

* A frame: most of it is the kernel's write to a socket whose reader keeps up (see "Kernel time
  on loopback"). At the rate of `fanout` a shardcast frame carries 29-38 messages, so it costs
  more than one of Nchan's one-message frames, and a delivery less.
* `POST /message`: a bare uvloop and httptools server that answers every request with a fixed
  200 and does nothing else used 13.7 µs of CPU per request under the same `api` load, and
  16.2 µs with a write per request to a second process, as an API process writes to a shard.
  shardcast's own Python for a request (HTTP, signature, validation, routing, the answer) takes
  19 µs in a loop without sockets.
* Latency: Nchan's p99, measured side by side, was as high (2.6 ms in one run, 4.3 ms in
  another): how the host schedules the server's and the generators' processes on 2 cores sets
  it.
* `/connect`: one round trip from the API process to the connection's shard and, at 2 shards,
  one between shards, for the full states of the channel's members whose users the other shard
  owns."""


def render_page(meta: dict, results: list[dict], tables: str, notes: list[str],
                plot: str | None, cluster: str = "") -> str:
    """The page; ``cluster`` is the section of a cluster run (``render_cluster``)."""
    lines = [
        "# Performance",
        "",
        "<!-- Generated by bench/docs.py; regenerate with:",
        CLUSTER_RUN,
        REGENERATE,
        "-->",
        "",
        f"Regenerate this page (about twenty minutes on a quiet machine) with `{CLUSTER_RUN}`, "
        f"then `{REGENERATE}`.",
        "",
        METHOD,
        "## Results",
        "",
        *run_lines(meta),
        "↑ higher is better, ↓ lower is better. `w=N` is shardcast with N shards; `w=N / cs` "
        "divides its figure by Channelstream's, `w=N / nchan` by Nchan's, `w=2 / w=1` shows "
        "what the second shard buys.",
        "",
        tables,
        "",
    ]
    if plot:
        lines += [f"![benchmark figures per target]({plot})", ""]
    goals = node_goal_lines(results)
    if goals:
        lines += ["### Targets", "", "Each shardcast run of one node against the targets a node "
                  "is held to:", "", *[f"* {line}" for line in goals], "", NODE_TARGETS_NOTE, ""]
    lines += notes_lines(results, notes)
    return "\n".join(lines + [cluster])


def run_lines(meta: dict) -> list[str]:
    """Where and how a run was made."""
    machine = meta.get("machine", {})
    return [f"Run on {meta.get('date', '?')}: {machine.get('cores', '?')} cores "
            f"({machine.get('cpu', '?')}), {machine.get('memory_gb', '?')} GiB, "
            f"{machine.get('system', '?')}, Python {meta.get('python', '?')}, "
            f"shardcast {meta.get('shardcast', '?')} (source `{meta.get('source') or '?'}`).",
            f"Command: `{meta.get('command', '?')}`.", ""]


def notes_lines(results: list[dict], notes: list[str], heading: str = "###") -> list[str]:
    failed = [r for r in results if "failed" in r]
    if not notes and not failed:
        return []
    lines = [f"{heading} Notes", ""]
    lines += [f"* {note}" for note in notes]
    lines += [f"* {r['scenario']} @ {r['target']} failed: {r['failed']}" for r in failed]
    return lines + [""]


def render_cluster(meta: dict, results: list[dict], tables: str, notes: list[str]) -> str:
    """The section of a cluster run: how it is measured, its tables, the targets met."""
    goals = goal_lines(results)
    lines = [CLUSTER_METHOD, "### Cluster results", "", *run_lines(meta),
             "`N nodes × w=W` is a cluster of N nodes of W shards each over one Redis; the last "
             "column divides its figure by one node's.", "", tables, ""]
    if goals:
        lines += ["### Targets", "", *[f"* {line}" for line in goals], ""]
    return "\n".join(lines + notes_lines(results, notes, "####"))
