"""Nchan (nginx + its pub/sub module, in C) as a target: ``--compare nchan``.

The bench runs an nginx of its own: a generated configuration in a temporary prefix, one free
loopback port, NGINX_WORKERS worker processes, no system service. Publishers post each message
to ``/pub/<channel>``, subscribers open ``ws /sub/<channel>`` (see ``bench.codec``). The server's
CPU and memory are those of the nginx master and its workers. Debian's packages are installed
with apt-get when missing; an nginx service that the installation starts is stopped and
disabled, so nothing is left listening on port 80.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import psutil

from .targets import HOST, LocalServer, free_port

PACKAGES = ("nginx-light", "libnginx-mod-nchan")
MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
SYSTEM_PID_FILE = Path("/run/nginx.pid")   # where Debian's nginx service keeps its pid
NGINX_WORKERS = 2
SCENARIOS = frozenset({"fanout", "latency", "overload", "connect"})   # one channel per client
# Subscriber processes for Nchan's fan-outs (unless --loadgen-procs): one per core. Reading and
# checking its frames, one per message, costs the generators more than twice Nchan's CPU, so
# they get every core; more processes than cores only add switches (on 2 cores, one series of
# runs: 287k deliveries/s with 2, 233k with 3, 210k with 4). The connect storm keeps the
# default, and with it as many opens in flight as for the other servers.
LOADGEN_PROCS = dict.fromkeys(("fanout", "overload"), max(2, os.cpu_count() or 2))
STATUS_PATH = "/nchan_status"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")   # nginx's http temp paths

CONFIG = """\
load_module {module};
daemon off;                 # the bench's child: its CPU and its workers' are the server's
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 65536;
}}
http {{
    access_log off;
{temp_paths}
    # A publisher pipelines all its requests on one keep-alive connection: nginx closes one
    # after 1,000 requests by default, failing those in flight.
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    server {{
        listen {host}:{port};
        location ~ ^/pub/([^/]+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
        }}
        location ~ ^/sub/([^/]+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
        }}
        location = {status} {{
            nchan_stub_status;
        }}
    }}
}}
"""


def render_config(prefix: Path, port: int) -> str:
    temp_paths = "\n".join(f"    {name}_temp_path {prefix / name};" for name in TEMP_DIRS)
    return CONFIG.format(module=MODULE, workers=NGINX_WORKERS, prefix=prefix,
                         temp_paths=temp_paths, host=HOST, port=port, status=STATUS_PATH)


def nginx_binary() -> str | None:
    """nginx lives in /usr/sbin, which may not be on a user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def ensure_nchan() -> str:
    """nginx with the Nchan module, installed with apt-get when missing; the nginx binary."""
    if MODULE.exists() and nginx_binary():
        return nginx_binary()
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("--compare nchan needs nginx and its Nchan module: run "
                           f"'sudo apt-get install {' '.join(PACKAGES)}'")
    print(f"installing {' and '.join(PACKAGES)} with apt-get (once)", file=sys.stderr, flush=True)
    service_was_running = system_nginx_running()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                   check=True, env=env)
    if not service_was_running:
        stop_system_nginx()
    if not (MODULE.exists() and nginx_binary()):
        raise RuntimeError(f"apt-get installed {' '.join(PACKAGES)} but {MODULE} or nginx "
                           "is still missing")
    return nginx_binary()


def system_nginx_running() -> bool:
    try:
        pid = int(SYSTEM_PID_FILE.read_text())
        return psutil.Process(pid).name() == "nginx"
    except (OSError, ValueError, psutil.Error):
        return False


def stop_system_nginx() -> None:
    """Stop and disable the nginx service the installation started (Debian's starts one)."""
    if Path("/run/systemd/system").exists():
        commands = [["systemctl", "disable", "--now", "nginx"]]
    else:
        commands = [["service", "nginx", "stop"], ["update-rc.d", "nginx", "disable"]]
    for command in commands:
        if shutil.which(command[0], path="/usr/sbin:/usr/bin:/sbin:/bin"):
            subprocess.run(command, check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    if system_nginx_running():
        raise RuntimeError("the nginx service started by the installation is still running: "
                           "stop it ('service nginx stop') before running the bench")


def installed_version() -> str | None:
    """Nchan's version as Debian packaged it (1:1.3.6+dfsg-2 -> 1.3.6), or None."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGES[1]],
                              capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    version = done.stdout.strip()
    if done.returncode or not version:
        return None
    return version.split(":", 1)[-1].split("+", 1)[0].split("-", 1)[0]


class NchanServer(LocalServer):
    """nginx with Nchan, NGINX_WORKERS workers, in a temporary prefix of its own."""

    codec = "nchan"
    scenarios = SCENARIOS
    loadgen_procs = LOADGEN_PROCS

    def __init__(self) -> None:
        super().__init__()
        self.secret = ""   # Nchan's endpoints are open: requests go unsigned
        self.workers = NGINX_WORKERS
        self.name = self.label()
        self.prefix: Path | None = None
        self.nginx = ""
        self.port = 0

    @staticmethod
    def label() -> str:
        version = installed_version()
        return f"nchan {version}" if version else "nchan"

    def start(self, settings: dict[str, object] | None = None) -> None:
        self.nginx = ensure_nchan()
        self.name = self.label()
        self.prefix = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
        self.prefix.chmod(0o755)   # workers run as nobody when the master runs as root
        super().start(settings)

    def allocate_ports(self) -> None:
        """A free port, and the configuration that listens on it."""
        self.port = free_port()
        self.api = f"http://{HOST}:{self.port}"
        self.ws_template = f"ws://{HOST}:{self.port}/sub/{{channel}}"
        (self.prefix / "nginx.conf").write_text(render_config(self.prefix, self.port))

    def ports(self) -> list[int]:
        return [self.port]

    def command(self) -> list[str]:
        return [self.nginx, "-p", f"{self.prefix}/", "-c", str(self.prefix / "nginx.conf"),
                "-e", "stderr"]

    def answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.api}{STATUS_PATH}", timeout=5) as response:
                return b"nchan version" in response.read()
        except OSError:
            return False

    def stop(self) -> None:
        super().stop()
        if self.prefix is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.prefix)
            self.prefix = None
