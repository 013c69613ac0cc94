"""Start one graded kernel in a sandbox (run as a script: ``python launch.py CONFIG ARGS...``).

The kernel spec that :func:`robustlab.grading.setup_course` writes runs this file (by path,
with the standard library only, so that it starts in milliseconds) as::

    python .../robustlab/grading/launch.py <course>/sandbox.json -f {connection_file} [EXTRA ...]

It replaces itself (``exec``) with the kernel, so the process that jupyter_client watches,
interrupts and kills is the sandbox itself. The working folder (jupyter_client starts the
kernel in the folder of the notebook being graded, ``autograded/<student>/<lab>/``) and the
kernel's private home ``<course>/.homes/<student>/<lab>/`` (its model cache, matplotlib and
IPython folders) are the only writable places besides the folder of the connection file
(the kernel creates its sockets there; each grading worker has its own). With bubblewrap (``bwrap``) the kernel runs
in new user, PID, IPC, UTS, cgroup and network namespaces, sees only the read-only system
folders and Python installation listed in the configuration, an empty read-only ``/tmp`` and
``/dev``, and dies with its parent; every process it starts ends with it (the PID namespace
is torn down when the kernel exits); everything but its folders is read-only. Without bubblewrap (``"sandbox": "none"``) the kernel
still gets the whitelisted environment, the working folder and the resource limits, in a
process group of its own, and nothing else.

Resource limits (``setrlimit``, applied inside the sandbox before the kernel starts):
address space (``memory_mb``), CPU seconds (``cpu_s``), processes (``processes``; the limit
counts the user's processes, and the superuser is exempt from it), size of any file written
(``file_mb``), and no core dumps.
"""

from __future__ import annotations

import json
import os
import sys

_LIMITS = r"""
import os, resource, sys
mb = 1 << 20
limits = {limits!r}
for name, key, scale in (("RLIMIT_AS", "memory_mb", mb), ("RLIMIT_CPU", "cpu_s", 1),
                         ("RLIMIT_NPROC", "processes", 1), ("RLIMIT_FSIZE", "file_mb", mb)):
    value = limits.get(key)
    if value:
        resource.setrlimit(getattr(resource, name), (int(value * scale), int(value * scale)))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher"] + sys.argv[1:])
"""


def runtime_root(course: str) -> str:
    """The folder of the graded kernels' runtime folders (connection files and IPC sockets).

    A Unix socket's path is limited to about 107 bytes, and a kernel's IPC socket is named
    ``<runtime>/kernel-<12 hex>-ipc-<n>``: a runtime folder inside a deeply nested course
    directory (or one named after a long student id) made the kernel fail to start. It is
    therefore a short folder in the temporary directory, named after the course's path.
    """
    import hashlib
    import tempfile

    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    digest = hashlib.sha256(os.path.realpath(course).encode()).hexdigest()[:12]
    return os.path.join(base, f"robustlab-runtime-{digest}")


def home_of(config: dict, workdir: str) -> str:
    """The kernel's private home: ``<course>/.homes/<student>/<lab>`` (outside the graded folder)."""
    graded = os.path.realpath(os.path.join(config["course"], "autograded"))
    return os.path.join(config["course"], ".homes", os.path.relpath(workdir, graded))


def build_command(config: dict, workdir: str, runtime_dir: str, kernel_args: list[str]) -> list[str]:
    """The command line that starts the kernel for ``config`` in ``workdir``."""
    python = config["python"]
    inner = [python, "-c", _LIMITS.format(limits=config.get("limits", {})), *kernel_args]
    if config.get("sandbox") != "bwrap":
        return inner
    cmd = [config["bwrap"], "--unshare-all", "--die-with-parent", "--clearenv",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for link, target in config.get("symlinks", []):
        cmd += ["--symlink", target, link]
    for path in config.get("ro_binds", []):
        cmd += ["--ro-bind", path, path]
    home = home_of(config, workdir)
    cmd += ["--bind", workdir, workdir, "--bind", home, home, "--bind", runtime_dir, runtime_dir]
    # everything else read-only: the root and /tmp, in which bwrap made the folders leading to the binds
    cmd += ["--remount-ro", "/tmp", "--remount-ro", "/", "--chdir", workdir]
    for key, value in sandbox_env(config, workdir).items():
        cmd += ["--setenv", key, value]
    return cmd + ["--", *inner]


def sandbox_env(config: dict, workdir: str) -> dict:
    """The kernel's whole environment: the configured whitelist, with the private folders."""
    env = dict(config.get("env", {}))
    home = home_of(config, workdir)
    env.update(HOME=home, TMPDIR=os.path.join(home, "tmp"),
               ROBUSTLAB_CACHE=os.path.join(home, "robustlab-cache"), MPLCONFIGDIR=os.path.join(home, "matplotlib"),
               IPYTHONDIR=os.path.join(home, "ipython"), XDG_CACHE_HOME=os.path.join(home, "cache"),
               NBGRADER_EXECUTION="autograde")
    return env


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: launch.py CONFIG -f CONNECTION_FILE [KERNEL ARGS...]", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        config = json.load(fh)
    kernel_args = argv[1:]
    connection = kernel_args[kernel_args.index("-f") + 1] if "-f" in kernel_args else None
    if connection is None:
        print("launch.py: no connection file (-f) given", file=sys.stderr)
        return 2
    workdir = os.path.realpath(os.getcwd())
    graded = os.path.realpath(os.path.join(config["course"], "autograded"))
    if os.path.commonpath([workdir, graded]) != graded or workdir == graded:
        print(f"launch.py: refusing to start a graded kernel outside {graded} (in {workdir})", file=sys.stderr)
        return 2
    runtime_dir = os.path.dirname(os.path.realpath(connection))
    runtimes = os.path.realpath(runtime_root(config["course"]))
    if config.get("sandbox") == "bwrap" and (os.path.commonpath([runtime_dir, runtimes]) != runtimes
                                             or runtime_dir == runtimes):
        # the sandbox binds the connection file's folder writable: only a grading worker's own
        print(f"launch.py: refusing a connection file outside {runtimes}/<student>/ ({connection})", file=sys.stderr)
        return 2
    env = sandbox_env(config, workdir)
    for key in ("HOME", "ROBUSTLAB_CACHE", "MPLCONFIGDIR", "IPYTHONDIR", "XDG_CACHE_HOME", "TMPDIR"):
        if env[key].startswith(home_of(config, workdir)):
            os.makedirs(env[key], exist_ok=True)
    cache = config.get("matplotlib_cache")
    if cache and os.path.isdir(cache):  # a font cache built once, so that each kernel need not build its own
        for name in os.listdir(cache):
            if name.startswith("fontlist") and name.endswith(".json"):
                with open(os.path.join(cache, name), "rb") as src, \
                        open(os.path.join(env["MPLCONFIGDIR"], name), "wb") as dst:
                    dst.write(src.read())
    cmd = build_command(config, workdir, runtime_dir, kernel_args)
    if config.get("sandbox") != "bwrap":
        try:
            os.setpgrp()  # the kernel and its children in a group of their own
        except OSError:
            pass  # already a session leader
    os.execve(cmd[0], cmd, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
