"""nbgrader preprocessors of robustlab's grader: guarded execution and clean feedback.

:class:`GuardedExecute` replaces nbgrader's ``Execute`` in ``Autograde`` (the course's
``nbgrader_config.py`` names it). It runs the notebook like ``Execute`` does (per-cell
timeout, interrupt, errors recorded, the next cells run) and adds:

- a guard, installed silently in the kernel before any student code runs: it removes the
  working folder from ``sys.path``, imports the modules the instructor's cells import, and
  keeps a snapshot of what the tests rely on (IPython's input and AST transformers, event
  callbacks and shell methods, the kernel's methods, trace and profile hooks,
  ``sys.displayhook``/``excepthook``/streams/``meta_path``, the builtins, the functions and
  classes of numpy, torch, scipy, math and robustlab, the methods of ``torch.Tensor``,
  ``torch.nn.Module`` and robustlab's classes, and the objects bound to the names the
  given cells define, less those the answer cells define too). Before every instructor cell (given or test) the snapshot is
  compared with the live state; any difference is tampering by the student code run since
  the last instructor cell: that test cell and every later one get no points (an error
  output says why) and the report names the cell. After every instructor cell the
  snapshot is refreshed. The guard is called through ``user_expressions`` of a silent
  request, which runs no input transformer and no event hook, and answers with a token
  that student code never sees, so that a replaced guard is tampering too.
- a dead kernel, or one that does not answer an interrupt within ``interrupt_grace``
  seconds, costs only the cell that killed it: the kernel is restarted and the notebook
  run again from the top with that cell replaced by an error (at most once per cell).
- a total time budget (``total_timeout``): the cells left when it runs out get an error.
- at most ``max_output_bytes`` of output per cell; the rest is dropped, with a note.
- one JSON line per notebook in the file named by ``$ROBUSTLAB_GRADING_REPORT``: which
  cells timed out, died, ran out of memory, had their output truncated or met tampering.

:class:`CleanFeedback` runs first in ``GenerateFeedback``: it removes the hidden tests from
the test cells and shortens their error tracebacks (which quote the failing line of a
hidden test) to the exception's name and message.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import secrets
import time
from queue import Empty

from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient import NotebookClient
from nbformat.notebooknode import NotebookNode
from traitlets import Bool, Integer

from nbgrader.preprocessors import Execute, NbGraderPreprocessor

from .prepare import _bound_names, _parse

__all__ = ["GuardedExecute", "CleanFeedback", "GUARD_SOURCE", "WATCHED_PACKAGES"]

WATCHED_PACKAGES = ("numpy", "torch", "scipy", "math", "robustlab", "statistics", "itertools", "functools",
                    "operator", "copy", "random")
"""Top-level packages whose functions and classes the guard watches."""

GUARD_SOURCE = r'''
def _robustlab_guard_factory(token, modules, watched, hidden_name):
    import builtins, importlib, os, sys, threading
    ip = get_ipython()
    kernel = getattr(ip, "kernel", None)
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.realpath(p) != cwd]
    for name in modules:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            try:
                importlib.import_module(".".join(parts[:n]))
                break
            except Exception:
                continue
    if "torch" in sys.modules:  # torch._dynamo, imported lazily, wraps torch.manual_seed and others
        for name in ("torch._dynamo", "torch.optim"):
            try:
                importlib.import_module(name)
            except Exception:
                pass
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # load the backend now: the inline one registers its post_execute hook
        try:
            pyplot._get_backend_mod()
        except Exception:
            pass
    _id, _callable, _vars, _list, _isinstance, _type, _getattr = id, callable, vars, list, isinstance, type, getattr
    _tuple, _set, _sorted, _str, _len, _dict, _hasattr = tuple, set, sorted, str, len, dict, hasattr
    _module_type = _type(sys)

    def funcs(d):
        return {k: _id(v) for k, v in _list(d.items()) if _callable(v) or _isinstance(v, _module_type)}

    def class_dict(cls):
        try:
            return {k: _id(v) for k, v in _list(_vars(cls).items())}
        except TypeError:
            return {}

    def mro(obj):
        out = {}
        for cls in _type(obj).__mro__:
            for k, v in class_dict(cls).items():
                out[cls.__qualname__ + "." + k] = v
        return out

    def ids(seq):
        try:
            return _tuple(_id(x) for x in seq)
        except TypeError:
            return (_id(seq),)

    def snapshot(names):
        s = {}
        s["sys.gettrace"] = _id(sys.gettrace())
        s["sys.getprofile"] = _id(sys.getprofile())
        if _hasattr(threading, "gettrace"):
            s["threading.gettrace"] = _id(threading.gettrace())
            s["threading.getprofile"] = _id(threading.getprofile())
        for key in ("displayhook", "excepthook", "stdout", "stderr", "stdin", "modules", "meta_path", "path_hooks",
                    "breakpointhook", "unraisablehook"):
            s["sys." + key] = _id(_getattr(sys, key, None))
        s["sys.meta_path[]"] = ids(sys.meta_path)
        s["sys.path_hooks[]"] = ids(sys.path_hooks)
        s["sys.path[]"] = _tuple(sys.path)
        for key in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers",
                    "input_transformer_manager", "displayhook", "display_pub", "compile", "events", "user_ns",
                    "user_global_ns", "custom_exceptions", "CustomTB", "InteractiveTB", "SyntaxTB", "display_trap",
                    "builtin_trap"):
            s["shell." + key] = _id(_getattr(ip, key, None))
            s["shell." + key + "[]"] = ids(_getattr(ip, key, ())) if key.startswith(("input_trans", "ast_", "custom")) else 0
        manager = ip.input_transformer_manager
        for key in ("cleanup_transforms", "line_transforms", "token_transformers"):
            s["transformer_manager." + key] = ids(_getattr(manager, key, ()))
        for event, callbacks in _sorted(ip.events.callbacks.items()):
            # the hooks that matplotlib's inline backend and ipykernel register themselves are theirs
            s["events." + event] = _tuple(_id(c) for c in callbacks if not _str(_getattr(c, "__module__", "")).startswith(
                ("matplotlib_inline.", "ipykernel.")))
        for k, v in funcs(_vars(ip)).items():
            s["shell." + k + "()"] = v
        for k, v in mro(ip).items():
            s["shell-class." + k] = v
        if kernel is not None:
            for k, v in funcs(_vars(kernel)).items():
                s["kernel." + k + "()"] = v
            for k, v in mro(kernel).items():
                s["kernel-class." + k] = v
        s["user_ns.__builtins__"] = _id(ip.user_ns.get("__builtins__"))
        for k, v in funcs(_vars(builtins)).items():
            s["builtins." + k] = v
        for name, mod in _list(sys.modules.items()):
            if mod is None or name.split(".")[0] not in watched:
                continue
            s["sys.modules[" + name + "]"] = _id(mod)
            d = _getattr(mod, "__dict__", None)
            if not _isinstance(d, _dict):
                continue
            for k, v in _list(d.items()):
                if _callable(v) or _isinstance(v, _module_type):
                    s[name + "." + k] = _id(v)
                    if _isinstance(v, _type) and _str(_getattr(v, "__module__", "")).split(".")[0] == "robustlab":
                        for m, w in class_dict(v).items():
                            s[name + "." + k + "." + m] = w
        torch = sys.modules.get("torch")
        if torch is not None:
            for cls in (torch.Tensor, torch.nn.Module, torch.nn.Parameter):
                for m, w in class_dict(cls).items():
                    s["torch-class." + cls.__name__ + "." + m] = w
        ns = ip.user_ns
        for name in names:
            s["name " + name] = _id(ns[name]) if name in ns else None
        return s

    state = {"snap": snapshot(()), "names": _set()}

    def guard(action, names=()):
        if action == "refresh":
            state["names"] |= _set(names)
            state["snap"] = snapshot(state["names"])
            return token + ":ok"
        old, new = state["snap"], snapshot(state["names"])
        changed = [k for k in old if new.get(k, -1) != old[k]]
        return token + ":" + ("ok" if not changed else "\x1f".join(changed[:8]))

    ip.user_ns[hidden_name] = guard
    ip.user_ns_hidden[hidden_name] = guard
'''


class _Hung(Exception):
    """The kernel did not answer after an interrupt."""


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {}) if hasattr(cell, "metadata") else {}


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with a tamper guard, kernel restarts, budgets and a report."""

    total_timeout = Integer(1800, help="Seconds the whole notebook may run (0: no budget).").tag(config=True)
    interrupt_grace = Integer(10, help="Seconds an interrupted kernel has to answer again.").tag(config=True)
    max_output_bytes = Integer(1_000_000, help="Bytes of output kept per cell (0: no limit).").tag(config=True)
    guard = Bool(True, help="Install the tamper guard in the kernel.").tag(config=True)
    ipc_transport = Bool(False, help="Connect to the kernel through Unix sockets (for kernels "
                                     "without network).").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._events = []
        skip = {}
        self._start = time.monotonic()
        for _ in range(len(nb.cells) + 1):
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            self._current = None
            try:
                self._run_notebook(nb, resources, km, skip)
                break
            except (DeadKernelError, _Hung) as exc:
                index = self._current
                if index is None or index in skip:
                    raise
                kind = "kernel died" if isinstance(exc, DeadKernelError) else "kernel hung"
                skip[index] = kind
                self._event(kind, nb.cells[index])
                self.log.warning("%s in cell %s; restarting the kernel without it", kind, index)
        self._write_report(resources)
        return self.nb, self.resources

    # ------------------------------------------------------------------ the run

    def _run_notebook(self, nb, resources, km, skip):
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._out_bytes, self._truncated = {}, set()
        with self.setup_kernel():
            info = self.wait_for_reply(self.kc.kernel_info())
            self.nb.metadata["language_info"] = info["content"]["language_info"]
            token = secrets.token_hex(16)
            name = "_robustlab_guard_" + secrets.token_hex(8)
            if self.guard:
                self._install_guard(token, name)
            tainted = None
            answer_names = set()
            for cell in self.nb.cells:
                if cell.cell_type == "code" and (_meta(cell).get("solution") or not _meta(cell)):
                    tree = _parse(cell.source)
                    answer_names |= _bound_names(tree) if tree else set()
            for index, cell in enumerate(self.nb.cells):
                self._current = index
                if cell.cell_type != "code":
                    continue
                meta = _meta(cell)
                instructor = bool(meta.get("locked")) and not meta.get("solution")
                is_test = bool(meta.get("grade")) and not meta.get("solution")
                if index in skip:
                    cell.outputs = [_error("GradingError", f"{skip[index]} while running this cell; it was skipped "
                                                           "and the notebook run again without it")]
                    continue
                if self.total_timeout and time.monotonic() - self._start > self.total_timeout:
                    cell.outputs = [_error("GradingError", f"the notebook's time budget ({self.total_timeout} s) "
                                                           "ran out before this cell")]
                    self._event("time budget", cell)
                    continue
                if self.guard and instructor and tainted is None:
                    changed = self._call_guard(token, name, "check")
                    if changed:
                        tainted = (cell, changed)
                        self._event("tampering", cell, detail=changed)
                if is_test and tainted is not None:
                    cell.outputs = [_error("GradingError", "tampering detected before this test "
                                           f"(changed: {', '.join(tainted[1])}); it was not run")]
                    continue
                try:
                    self.preprocess_cell(cell, resources, index)
                except CellTimeoutError:  # interrupted, but its output never ended: the kernel hangs
                    self._event("timeout", cell)
                    raise _Hung() from None
                names = [e.get("ename") for e in cell.outputs if e.get("output_type") == "error"]
                if "CellTimeoutError" in names:
                    self._event("timeout", cell)
                    if not self._responsive():
                        raise _Hung()
                if "MemoryError" in names:
                    self._event("out of memory", cell)
                if index in self._truncated:
                    self._event("output truncated", cell)
                if self.guard and instructor and tainted is None:
                    # the names a given cell defines are watched (not those of test cells, nor those the
                    # answer cells define too: those are the student's to rebind)
                    tree = _parse(cell.source) if not is_test else None
                    names = sorted(_bound_names(tree) - answer_names) if tree else []
                    self._call_guard(token, name, "refresh", names)
        self.set_widgets_metadata()

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if self.ipc_transport:  # socket files in the runtime folder, which the sandbox binds
            from jupyter_core.paths import jupyter_runtime_dir

            # the connection file too (jupyter_client's default is a temporary file in /tmp,
            # and the sandbox binds the folder of the connection file)
            runtime, name = jupyter_runtime_dir(), f"kernel-{secrets.token_hex(6)}"
            km.transport = "ipc"
            km.connection_file = os.path.join(runtime, name + ".json")
            km.ip = os.path.join(runtime, name + "-ipc")
        return km

    def _install_guard(self, token, name):
        modules = set()
        for cell in self.nb.cells:
            if cell.cell_type == "code" and _meta(cell).get("locked") and not _meta(cell).get("solution"):
                tree = _parse(cell.source)
                for node in ast.walk(tree) if tree else ():
                    if isinstance(node, ast.Import):
                        modules |= {a.name for a in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        modules |= {f"{node.module}.{a.name}" for a in node.names}
        code = (GUARD_SOURCE + f"\n_robustlab_guard_factory({token!r}, {sorted(modules)!r}, "
                f"{set(WATCHED_PACKAGES)!r}, {name!r})\ndel _robustlab_guard_factory\n")
        reply = self._request(code, {}, timeout=max(self.timeout or 60, 120))
        if reply is None or reply["content"]["status"] != "ok":
            raise RuntimeError(f"the grading guard could not be installed: {reply and reply['content']}")
        self._call_guard(token, name, "refresh", [])

    def _call_guard(self, token, name, action, names=()):
        """``[]`` when nothing changed, else the names of what changed."""
        expr = f"{name}({action!r}, {list(names)!r})"
        reply = self._request("", {"guard": expr}, timeout=max(self.timeout or 60, 60))
        if reply is None:
            return ["the guard did not answer"]
        result = reply["content"].get("user_expressions", {}).get("guard", {})
        try:
            text = ast.literal_eval(result.get("data", {}).get("text/plain", "''"))
        except (ValueError, SyntaxError):
            text = ""
        if not isinstance(text, str) or not text.startswith(token + ":"):
            return ["the guard itself"]
        text = text[len(token) + 1:]
        return [] if text == "ok" else text.split("\x1f")

    def _request(self, code, user_expressions, timeout):
        return run_sync(self._async_request)(code, user_expressions, timeout)

    async def _async_request(self, code, user_expressions, timeout):
        msg_id = self.kc.execute(code, silent=True, store_history=False, user_expressions=user_expressions,
                                 allow_stdin=False)
        return await self._async_reply(msg_id, timeout)

    async def _async_reply(self, msg_id, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = await asyncio.wait_for(self.kc.shell_channel.get_msg(timeout=min(left, 1.0)), left + 1)
            except (Empty, asyncio.TimeoutError):
                if not await self.kc.is_alive():
                    raise DeadKernelError("Kernel died") from None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def _responsive(self) -> bool:
        msg_id = self.kc.kernel_info()
        return run_sync(self._async_reply)(msg_id, self.interrupt_grace) is not None

    # ------------------------------------------------------------------ output and report

    def output(self, outs, msg, display_id, cell_index):
        if self.max_output_bytes:
            size = len(json.dumps(msg.get("content", {}), default=str))
            used = self._out_bytes.get(cell_index, 0) + size
            self._out_bytes[cell_index] = used
            if used > self.max_output_bytes:
                if cell_index not in self._truncated:
                    self._truncated.add(cell_index)
                    outs.append(NotebookNode(output_type="stream", name="stderr",
                                             text=f"\n[output truncated by the grader after "
                                                  f"{self.max_output_bytes} bytes]\n"))
                return None
        return super().output(outs, msg, display_id, cell_index)

    def _event(self, kind, cell, detail=None):
        grade_id = _meta(cell).get("grade_id") or cell.get("id")
        event = {"kind": kind, "cell": grade_id}
        if detail:
            event["detail"] = list(detail)
        if event not in self._events:
            self._events.append(event)

    def _write_report(self, resources):
        path = os.environ.get("ROBUSTLAB_GRADING_REPORT")
        if not path:
            return
        info = (resources or {}).get("nbgrader", {})
        record = {"student": info.get("student"), "notebook": info.get("notebook"),
                  "seconds": round(time.monotonic() - self._start, 2), "events": self._events}
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


class CleanFeedback(NbGraderPreprocessor):
    """Remove hidden tests and the tracebacks that quote them from a graded notebook."""

    begin = "### BEGIN HIDDEN TESTS"
    end = "### END HIDDEN TESTS"

    def preprocess_cell(self, cell, resources, index):
        meta = _meta(cell)
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            lines, hidden = [], False
            for line in cell.source.splitlines():
                if line.strip() == self.begin:
                    hidden = True
                elif line.strip() == self.end:
                    hidden = False
                elif not hidden:
                    lines.append(line)
            cell.source = "\n".join(lines)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources
