"""Starting and stopping `covenant dev` for the compatibility suites (127.0.0.1 only)."""

import signal
import socket
import subprocess
import time

import requests


def port_range(n: int) -> int:
    """A base port with n free consecutive ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        held = []
        try:
            for i in range(n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range")


def start(cmd: list, timeout: float = 60):
    """Runs `cmd` (a `covenant dev ...` command line) until it prints a line with
    "ready"; returns the process and the lines it printed. Raises if it never does."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "ready" in line:
            return proc, lines
    proc.kill()
    rest, _ = proc.communicate(timeout=30)
    raise RuntimeError("covenant dev did not become ready:\n" + "".join(lines) + (rest or ""))


def stop(proc) -> str:
    """Stops it as Ctrl-C would; it must exit cleanly. Returns the rest of its output."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def backup_port(base: int, service_cert: str) -> int:
    """The port of a backup of the network whose first node listens on `base`, once a
    primary is elected."""
    deadline = time.time() + 30
    while time.time() < deadline:
        nodes = requests.get(f"https://127.0.0.1:{base}/node/network/nodes", verify=service_cert,
                             timeout=5).json()["nodes"]
        if any(n["primary"] for n in nodes):
            backup = next(n for n in nodes if not n["primary"])
            address = backup["rpc_interfaces"]["primary_rpc_interface"]["published_address"]
            return int(address.rsplit(":", 1)[1])
        time.sleep(0.1)
    raise RuntimeError("no primary elected")
