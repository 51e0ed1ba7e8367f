"""The sandbox agent: a long-lived process inside every sandbox.

It is sent as `python3 -c <this source> <workspace>` and speaks JSON lines on
stdin/stdout. Keeping one process alive makes an exec a socket round trip plus a
fork, instead of a Docker exec (three API calls and a runc start). Standard library
only, Python 3.7+ syntax, because it runs on whatever python3 the image has.
"""

# ruff: noqa: UP031  (runs on any python3 >= 3.7 in the image; keep it plain)
import base64
import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
import threading
import time

ROOT = sys.argv[1] if len(sys.argv) > 1 else "/app"
OUT = sys.stdout.buffer
LOCK = threading.Lock()
MAX_FILE = 64 * 1024 * 1024
# Cgroup counters of OOM kills (v2 first, then v1): compared around a command to
# tell "killed by the OOM killer" from any other SIGKILL.
OOM_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def send(msg):
    data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
    with LOCK:
        OUT.write(data)
        OUT.flush()


def b64(data):
    return base64.b64encode(bytes(data)).decode("ascii")


def oom_count():
    for path in OOM_FILES:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def kill_group(proc):
    # A fork bomb keeps forking while we kill, so repeat until the group is empty.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.005)


def resolve(path):
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def do_exec(req):
    rid = req["id"]
    argv = req["argv"]
    cwd = resolve(req.get("cwd") or ROOT)
    env = dict(os.environ)
    env.update(req.get("env") or {})
    timeout = float(req.get("timeout") or 600.0)
    limit = int(req.get("max_output") or 1 << 20)
    streaming = bool(req.get("stream"))
    rlimits = req.get("rlimits") or {}
    started = time.monotonic()

    def finish(code, stdout=b"", stderr=b"", **flags):
        msg = {"id": rid, "ev": "exit", "code": code, "stdout": b64(stdout), "stderr": b64(stderr)}
        msg["duration"] = time.monotonic() - started
        msg.update(flags)
        send(msg)

    if not os.path.isdir(cwd):
        finish(126, stderr=(f"jetty: working directory not found: {cwd}\n").encode())
        return

    def prepare_child():
        # Make the command, not the agent, the OOM killer's first choice.
        try:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")
            os.close(fd)
        except OSError:
            pass
        for name, value in rlimits.items():
            with contextlib.suppress(ValueError, OSError, AttributeError):
                resource.setrlimit(getattr(resource, name), (int(value), int(value)))

    before = oom_count()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=prepare_child,
        )
    except FileNotFoundError:
        finish(127, stderr=(f"jetty: command not found: {argv[0]}\n").encode())
        return
    except OSError as exc:
        finish(126, stderr=(f"jetty: cannot run {argv[0]}: {exc.strerror}\n").encode())
        return

    bufs = {1: bytearray(), 2: bytearray()}
    state = {"truncated": False, "done": False}

    def pump(pipe, fd):
        while True:
            try:
                chunk = pipe.read1(65536)
            except (OSError, ValueError):
                break
            if not chunk:
                break
            if state["done"]:
                continue
            room = limit - len(bufs[fd])
            if room <= 0:
                state["truncated"] = True
                continue
            if len(chunk) > room:
                chunk = chunk[:room]
                state["truncated"] = True
            bufs[fd] += chunk
            if streaming:
                send({"id": rid, "ev": "out", "fd": fd, "data": b64(chunk)})

    pumps = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True)]
    try:
        for t in pumps:
            t.start()
    except RuntimeError:
        kill_group(proc)
        proc.wait()
        finish(126, stderr=b"jetty: sandbox is out of processes (pids limit)\n")
        return
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        proc.wait()
    # Background children may keep the pipes open; do not wait for them for long.
    grace = 0.2 if timed_out else min(2.0, max(0.0, started + timeout - time.monotonic()))
    for t in pumps:
        t.join(grace)
    state["done"] = True
    code = proc.returncode
    if code < 0:
        code = 128 - code
    after = oom_count()
    oom = before is not None and after is not None and after > before and code == 137
    out, err = (b"", b"") if streaming else (bytes(bufs[1]), bytes(bufs[2]))
    finish(code, out, err, truncated=state["truncated"], timed_out=timed_out, oom_killed=oom)


def do_read(req):
    with open(resolve(req["path"]), "rb") as f:
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValueError("file larger than %d bytes" % MAX_FILE)
    send({"id": req["id"], "ev": "ok", "data": b64(data)})


def do_write(req):
    path = resolve(req["path"])
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(base64.b64decode(req["data"]))
    if req.get("mode") is not None:
        os.chmod(path, int(req["mode"]))
    send({"id": req["id"], "ev": "ok"})


def do_list(req):
    top = resolve(req.get("path") or ROOT)
    if not os.path.isdir(top):
        raise NotADirectoryError(top) if os.path.exists(top) else FileNotFoundError(top)
    entries = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            entries.append([os.path.relpath(full, top), st.st_size, is_dir, st.st_mtime])
        if not req.get("recursive"):
            break
        dirnames.sort()
    send({"id": req["id"], "ev": "ok", "entries": entries})


def do_archive(req):
    top = resolve(req.get("path") or ROOT)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(top, arcname=".")
    send({"id": req["id"], "ev": "ok", "data": b64(buf.getvalue())})


ERROR_KINDS = ((FileNotFoundError, "not_found"), (IsADirectoryError, "is_dir"),
               (NotADirectoryError, "not_dir"), (PermissionError, "permission"))


def guarded(handler, req):
    try:
        handler(req)
    except Exception as exc:  # every failure becomes a reply, never a dead agent
        kind = "error"
        for cls, name in ERROR_KINDS:
            if isinstance(exc, cls):
                kind = name
                break
        send({"id": req.get("id"), "ev": "error", "kind": kind, "message": f"{type(exc).__name__}: {exc}"})


HANDLERS = {"exec": do_exec, "read": do_read, "write": do_write, "list": do_list, "archive": do_archive}


def main():
    send({"ev": "hello", "pid": os.getpid(), "uid": os.getuid(), "python": sys.version.split()[0]})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        req = json.loads(line)
        handler = HANDLERS.get(req.get("op"))
        if handler is None:
            send({"id": req.get("id"), "ev": "error", "kind": "error", "message": "unknown op"})
            continue
        try:
            threading.Thread(target=guarded, args=(handler, req), daemon=True).start()
        except RuntimeError:
            # Out of processes (a fork bomb at the pids limit): refuse this request, stay alive.
            send({"id": req.get("id"), "ev": "error", "kind": "busy", "message": "sandbox is out of processes, retry later"})
    # stdin closed: the gateway is gone, so the sandbox ends with it.
    os._exit(0)


if __name__ == "__main__":
    main()
