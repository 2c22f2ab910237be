#!/usr/bin/env python3
"""Writes scripts/agent.order, the order in which the release link lays out functions (lld
--symbol-ordering-file, read by scripts/release-link-flags), from a traced run of the agent.

Why: an idle agent's resident memory was two thirds the code of its own binary. The kernel maps
code in 64 KiB windows around each page a process touches (fault-around), and the ~5,500
functions the agent runs to start, connect, serve /healthz and wait were spread over 15 MB of
code, so some 130 windows (8-9 MiB) stayed resident for about 1.5 MB of functions that ran. Laid
out first, in the order they first ran, they share a few windows.

How: the release agent runs under scripts/agent-order/funtrace.c (LD_PRELOAD; a breakpoint on
every function, each reported once, at its first call) through what `tally-bench agent`
measures first: start beside a collector, connect, answer /healthz, sit idle; then it takes a few
events over HTTP and the socket and ships them, so those functions come next, after the idle
ones. The functions' names, in first-call order, are the file. A function missing from the file
(new code) is only laid out with the rest, never wrong: lld places what the file names first
and ignores names it does not find (--no-warn-symbol-ordering).

    make agent-order           # release build, trace, write scripts/agent.order, relink the agent
    tally-bench agent          # prints the idle RSS and how much of it is the agent's code

Development tool: needs a C compiler, the release binaries, and a Linux on x86-64.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable_segment(binary):
    """The link address at which the executable LOAD segment's mapping begins (page-aligned),
    and where the segment ends."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD" and "E" in fields[6:-1]:
            start = int(fields[2], 16)
            return start & ~0xFFF, start + int(fields[5], 16)
    sys.exit(f"record.py: no executable segment in {binary}")


def functions(binary, segment):
    """Function symbols in the executable segment: address -> names (aliases share an address)."""
    names = {}
    out = subprocess.run(["readelf", "-sW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[3] == "FUNC" and fields[6] != "UND" and int(fields[2]) > 0:
            address = int(fields[1], 16)
            if segment[0] <= address < segment[1]:
                names.setdefault(address, []).append(fields[7])
    return names


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, answer.read().decode()
    except Exception:
        return None, ""


def wait(what, check, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    sys.exit(f"record.py: timed out waiting for {what}")


def spool_events(port):
    status, body = get(port, "/metrics")
    for line in body.splitlines():
        if line.startswith("tally_agent_spool_events "):
            return int(float(line.split()[-1]))
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "release"), help="folder of the release binaries")
    parser.add_argument("--out", default=os.path.join(ROOT, "scripts", "agent.order"))
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    options = parser.parse_args()
    agent = os.path.realpath(os.path.join(options.bin, "tally-agent"))
    collector = os.path.realpath(os.path.join(options.bin, "tally-collector"))
    work = tempfile.mkdtemp(prefix="tally-agent-order-")
    children = []
    try:
        compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if compiler is None:
            sys.exit("record.py: needs a C compiler (cc, gcc or clang)")
        tracer = os.path.join(work, "funtrace.so")
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", os.path.join(HERE, "funtrace.c"), "-o", tracer], check=True)
        segment = executable_segment(agent)
        names = functions(agent, segment)
        listing = os.path.join(work, "functions.bin")
        with open(listing, "wb") as handle:
            handle.write(b"".join(struct.pack("<Q", address) for address in sorted(names)))

        collector_port, collector_http, agent_port = free_port(), free_port(), free_port()
        children.append(subprocess.Popen(
            [collector, "--store", f"sqlite:{work}/ledger.db", "--listen", f"127.0.0.1:{collector_port}",
             "--http", f"127.0.0.1:{collector_http}"],
            stdout=open(os.path.join(work, "collector.log"), "w"), stderr=subprocess.STDOUT))
        wait("the collector", lambda: get(collector_http, "/healthz")[0] is not None)

        # The agent as `tally-bench agent` starts it (AgentBenchRun.startAgent).
        config = os.path.join(work, "agent.yaml")
        with open(config, "w") as handle:
            handle.write("reconnect:\n  initial: 50ms\n  max: 250ms\n")
        trace = os.path.join(work, "trace.bin")
        environment = dict(os.environ, LD_PRELOAD=tracer, FUNTRACE_OUT=trace, FUNTRACE_FUNCS=listing,
                           FUNTRACE_SEGMENT=f"{segment[0]:x}", SWIFT_BACKTRACE="enable=no")
        socket_path = os.path.join(work, "agent.sock")
        traced = subprocess.Popen(
            [agent, "--config", config, "--spool", os.path.join(work, "spool"), "--listen", f"127.0.0.1:{agent_port}",
             "--socket", socket_path, "--agent-id", "order-agent", "--default-metric", "api_calls",
             "--collector", f"127.0.0.1:{collector_port}"],
            env=environment, stdout=open(os.path.join(work, "agent.log"), "w"), stderr=subprocess.STDOUT)
        children.append(traced)

        def connected():
            status, body = get(agent_port, "/healthz")
            return status == 200 and json.loads(body).get("collector", {}).get("reachable") is True
        wait("the agent to serve and connect", connected)
        deadline = time.monotonic() + options.idle_seconds
        while time.monotonic() < deadline:  # what the idle RSS figure samples beside
            get(agent_port, "/healthz")
            time.sleep(0.1)

        # Then the ingest paths, so their functions follow the idle ones.
        body = "".join(json.dumps({"tenant": f"t{i % 7}", "metric": "api_calls", "quantity": 1 + i % 3,
                                   "timestamp": "2026-11-21T12:00:00Z", "id": f"order-{i}"}) + "\n" for i in range(200))
        request = urllib.request.Request(f"http://127.0.0.1:{agent_port}/v1/events", data=body.encode(),
                                         headers={"Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        with socket.socket(socket.AF_UNIX) as stream:
            stream.connect(socket_path)
            lines = body.replace("order-", "order-socket-")
            stream.sendall(lines.encode())
            received = b""
            while received.count(b"\n") < 200:
                chunk = stream.recv(65536)
                if not chunk:
                    break
                received += chunk
        get(agent_port, "/metrics")
        wait("the agent to ship", lambda: spool_events(agent_port) == 0)
        traced.send_signal(signal.SIGTERM)
        if traced.wait(timeout=30) != 0:
            sys.exit(f"record.py: the traced agent exited with {traced.returncode}: see {work}/agent.log")

        with open(trace, "rb") as handle:
            data = handle.read()
        called = [struct.unpack_from("<Q", data, offset)[0] for offset in range(0, len(data) - 7, 8)]
        seen, order = set(), []
        for address in called:
            for name in names.get(address, []):
                if name not in seen:
                    seen.add(name)
                    order.append(name)
        with open(options.out, "w") as handle:
            handle.write("# The agent's functions in the order of their first call (scripts/agent-order/record.py):\n")
            handle.write("# laid out first by the release link (scripts/release-link-flags). Regenerate: make agent-order\n")
            handle.write("".join(name + "\n" for name in order))
        print(f"record.py: {len(called)} functions ran, {len(order)} names written to {os.path.relpath(options.out, ROOT)}")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
