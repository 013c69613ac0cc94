"""What the grader does to a submission before nbgrader sees it, and the static check.

:func:`rebuild` makes the notebook that is graded out of the lab's released notebook (the
instructor's cells, their metadata and order, the notebook's metadata and kernel) and only
the student's code: the source of each answer cell, matched by its ``grade_id``, and the
cells the student added. Test cells and given cells always come from the release (nbgrader
then restores the hidden tests from its gradebook): edited, deleted, moved or duplicated
test cells, copy-pasted grading metadata, unknown ``grade_id`` values and edited
notebook metadata therefore cannot change what is graded, and each is reported.

:func:`check_code` reads the student's code (every answer cell and added cell, magics
translated by IPython first) and reports what could tamper with grading: reaching the
shell, the interpreter or the frames (``get_ipython``, ``sys``, ``gc``, ``inspect``,
``ctypes``, dunder attributes, ``exec``/``eval``/``compile``/``globals``/``setattr``,
``type`` with three arguments), running code later (threads, signals, finalizers,
``atexit``, ``asyncio``), loading code from data (``pickle``, ``torch.load`` without
``weights_only=True``), changing what the tests see (assigning to an attribute or item of an
imported module, a name the instructor's cells define, or an alias of one; rebinding a name
the tests use; defining comparison or conversion methods, which can make any answer look
right). A flagged cell is not run at all: the grader replaces its source by a
``raise`` that names the reason, so that the tampering has no effect, the tests that need
the cell fail, and the report says where. The check is deliberately strict: honest lab
code needs none of this (a test proves it on every lab's solution).
"""

from __future__ import annotations

import ast
import builtins
import copy
import re

__all__ = ["check_code", "rebuild", "instructor_names", "neutralised_source", "Rebuilt"]

FORBIDDEN_MODULES = frozenset({
    "sys", "builtins", "__builtin__", "IPython", "ipykernel", "jupyter_client", "traitlets", "ctypes", "cffi", "gc",
    "importlib", "imp", "inspect", "types", "marshal", "code", "codeop", "dis", "threading", "_thread",
    "multiprocessing", "concurrent", "asyncio", "sched", "signal", "atexit", "weakref", "pickle", "_pickle",
    "cPickle", "dill", "cloudpickle", "joblib", "shelve", "copyreg", "runpy", "zipimport", "pkgutil", "site",
    "sysconfig", "pdb", "bdb", "trace", "tracemalloc", "faulthandler", "subprocess", "socket", "unittest",
    "mock", "pytest", "robustlab.grading", "nbgrader", "nbclient", "nbformat", "_io", "io", "readline",
})
FORBIDDEN_CALLS = frozenset({
    "exec", "eval", "compile", "globals", "locals", "vars", "setattr", "delattr", "__import__", "breakpoint",
    "get_ipython",
})
FRAME_ATTRIBUTES = frozenset({
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "tb_frame", "tb_next", "gi_frame",
    "cr_frame", "ag_frame", "gi_code", "co_code", "co_consts", "func_globals", "func_code", "multiprocessing",
    "read_pickle", "settrace", "setprofile", "addaudithook", "_getframe", "modules",
})
ALLOWED_DUNDERS = frozenset({
    "__init__", "__name__", "__doc__", "__repr__", "__str__", "__len__", "__getitem__", "__iter__", "__next__",
    "__enter__", "__exit__", "__call__", "__post_init__", "__main__", "__future__", "__version__",
})
ALLOWED_MAGICS = frozenset({"time", "timeit", "matplotlib"})
_DUNDER = re.compile(r"^__\w+__$")


def _transform(source: str) -> str:
    """The Python code IPython runs for ``source`` (magics and ``!`` lines become calls)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return source
    return TransformerManager().transform_cell(source)


def _root(node):
    """The name at the root of ``a.b[c].d`` (or None)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Starred)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _chain_root(node):
    """The name at the root of a plain ``a.b.c`` (None for anything with calls or items)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound_names(tree) -> set[str]:
    """Names a piece of code binds at its top level (assignments, defs, imports, loops, ...)."""
    names = set()

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            names.add(node.name)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_ClassDef(self, node):
            names.add(node.name)

        def visit_Lambda(self, node):
            pass

        def visit_ListComp(self, node):
            pass

        visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

        def visit_Name(self, node):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                names.add(node.id)

        def visit_alias(self, node):
            names.add((node.asname or node.name).split(".")[0])

        def visit_ExceptHandler(self, node):
            if node.name:
                names.add(node.name)
            self.generic_visit(node)

    Visitor().visit(tree)
    return names


def _free_loads(tree) -> set[str]:
    """Names ``tree`` reads that none of its functions, lambdas or comprehensions binds locally."""
    out = set()

    def visit(node, local):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
            params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
            body = node.body if isinstance(node.body, list) else [node.body]
            inner = set(local) | params
            for statement in body:
                inner |= _bound_names(statement)
            for child in getattr(node, "decorator_list", []) + args.defaults + [d for d in args.kw_defaults if d]:
                visit(child, local)
            for statement in body:
                visit(statement, inner)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            inner = set(local) | {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
            for child in ast.iter_child_nodes(node):
                visit(child, inner)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local:
            out.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child, local)

    visit(tree, set())
    return out


def _imports(tree) -> dict[str, str]:
    """``{alias: module}`` of the top-level imports in ``tree``."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def _parse(source: str):
    try:
        return ast.parse(_transform(source))
    except (SyntaxError, ValueError):
        return None


def instructor_names(given_sources, test_sources, solution_sources=()) -> dict:
    """What the instructor's cells define and use: the names the tests rely on.

    Returns a dict with ``protected`` (the names that the given and test cells use and
    that they or the builtins define: imported modules, given helpers and data; not the
    names that the source's answer cells, ``solution_sources``, define), ``modules`` (the modules their
    imports name, which the grader imports before any student code runs) and ``imports``
    (``{alias: module}``, so that a student may repeat ``import numpy as np``).
    """
    bound, modules, imports, used = set(), set(), {}, set()
    for source in list(given_sources) + list(test_sources):
        tree = _parse(source)
        if tree is None:
            continue
        bound |= _bound_names(tree)
        found = _imports(tree)
        imports.update(found)
        modules |= set(found.values())
        # a name a cell binds itself is that cell's own; the names it takes from elsewhere matter
        used |= _free_loads(tree) - (_bound_names(tree) - set(dir(builtins)))
    answers = set()
    for source in solution_sources:  # the student's to define, whatever the tests do with them
        tree = _parse(source)
        if tree is not None:
            answers |= _bound_names(tree)
    protected = ((bound | set(dir(builtins))) & used) - answers
    return {"protected": protected, "modules": sorted(modules), "imports": imports}


def check_code(source: str, *, protected=(), imports=None) -> list[str]:
    """The reasons why ``source`` (one cell of student code) may tamper with grading.

    An empty list means the cell may run. ``protected`` are the names the tests use
    (see :func:`instructor_names`); ``imports`` maps the instructor's import aliases to
    their modules, so that repeating one of them is allowed.

    >>> check_code("def f(x):\\n    return 2 * x")
    []
    >>> check_code("import numpy as np\\nnp.allclose = lambda *a, **k: True", protected={"np"},
    ...            imports={"np": "numpy"})
    ['assigns to an attribute or item of the protected name np (line 2)']
    >>> check_code("get_ipython().input_transformers_post.append(lambda lines: lines)")
    ['calls get_ipython (line 1)']
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    imports = dict(imports or {})
    protected = set(protected)
    tree = _parse(source)
    if tree is None:
        return []  # it does not compile: running it raises SyntaxError, which tampers with nothing
    reasons = []

    def flag(message, node):
        reason = f"{message} (line {getattr(node, 'lineno', '?')})"
        if reason not in reasons:
            reasons.append(reason)

    def module_allowed(name):
        parts = name.split(".")
        return not any(".".join(parts[:i]) in FORBIDDEN_MODULES for i in range(1, len(parts) + 1))

    # aliases of protected things are protected too: T = torch.Tensor; T.eq = ...
    protected_here = set(protected)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            if _chain_root(node.value) in protected_here or _chain_root(node.value) in imports:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    protected_here |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            protected_here |= set(_imports(ast.Module(body=[node], type_ignores=[])))

    class Visitor(ast.NodeVisitor):
        def __init__(self):
            self.local = [set()]  # names local to the enclosing functions

        def _is_protected(self, name):
            return name in protected_here and not any(name in scope for scope in self.local[1:])

        def visit_Import(self, node):
            for alias in node.names:
                if not module_allowed(alias.name):
                    flag(f"imports {alias.name}", node)
                bound = alias.asname or alias.name.split(".")[0]
                self._rebinds(bound, node, module=alias.name if alias.asname else alias.name.split(".")[0])

        def visit_ImportFrom(self, node):
            module = node.module or ""
            if node.level or not module_allowed(module):
                flag(f"imports from {'.' * node.level}{module}", node)
            for alias in node.names:
                if alias.name == "*":
                    flag(f"imports * from {module}", node)
                elif not module_allowed(f"{module}.{alias.name}"):
                    flag(f"imports {module}.{alias.name}", node)
                self._rebinds(alias.asname or alias.name, node, module=f"{module}.{alias.name}")

        def _rebinds(self, name, node, module=None):
            if not self._is_protected(name):
                return
            if module is not None and (imports.get(name) == module or name not in protected):
                return  # repeating the instructor's own import, or importing a module of one's own
            flag(f"rebinds {name}, which the tests use", node)

        def visit_Name(self, node):
            if node.id in FORBIDDEN_CALLS:
                flag(f"calls {node.id}" if True else "", node)
            elif _DUNDER.match(node.id) and node.id not in ALLOWED_DUNDERS:
                flag(f"uses {node.id}", node)
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                if len(self.local) > 1 and node.id not in self.globals():
                    self.local[-1].add(node.id)
                else:
                    self._rebinds(node.id, node)

        def globals(self):
            return self.global_names[-1] if self.global_names else set()

        global_names: list

        def visit_Global(self, node):
            for name in node.names:
                if name in protected_here:
                    flag(f"declares global {name}, which the tests use", node)
            if self.global_names:
                self.global_names[-1] |= set(node.names)

        visit_Nonlocal = visit_Global

        def visit_Attribute(self, node):
            if _DUNDER.match(node.attr) and node.attr not in ALLOWED_DUNDERS:
                flag(f"uses the attribute {node.attr}", node)
            elif node.attr in FRAME_ATTRIBUTES:
                flag(f"uses the attribute {node.attr}", node)
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self._assigns_into(node)
            self.generic_visit(node)

        def visit_Subscript(self, node):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self._assigns_into(node)
            self.generic_visit(node)

        def _assigns_into(self, node):
            root = _root(node)
            if root is not None and self._is_protected(root):
                flag(f"assigns to an attribute or item of the protected name {root}", node)

        def visit_Constant(self, node):
            if isinstance(node.value, str) and _DUNDER.match(node.value) and node.value not in ALLOWED_DUNDERS:
                flag(f"uses the string {node.value!r}", node)

        def visit_Call(self, node):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "type" and len(node.args) != 1:
                flag("creates a class with type()", node)
            if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2:
                name = node.args[1]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str) and not name.value.startswith("_")):
                    flag(f"calls {func.id} with a computed or private name", node)
            if isinstance(func, ast.Attribute) and func.attr in ("load", "loads"):
                root = imports.get(_root(func), _root(func)) or ""
                weights_only = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                                   for k in node.keywords)
                if root.split(".")[0] == "torch" and not weights_only:
                    flag("calls torch.load without weights_only=True", node)
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    flag("loads pickles (allow_pickle)", node)
            if isinstance(func, ast.Attribute) and func.attr in ("run_line_magic", "run_cell_magic", "system", "getoutput"):
                magic = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                if func.attr == "run_line_magic" and magic in ALLOWED_MAGICS:
                    argument = node.args[1] if len(node.args) > 1 else None
                    if magic != "matplotlib" and isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                        for reason in check_code(argument.value, protected=protected_here, imports=imports):
                            flag(f"in %{magic}: {reason}", node)
                    return
                if func.attr == "run_cell_magic" and magic in ("time", "timeit") and len(node.args) == 3 \
                        and isinstance(node.args[2], ast.Constant):
                    for reason in check_code(node.args[2].value, protected=protected_here, imports=imports):
                        flag(f"in %%{magic}: {reason}", node)
                    return
                flag(f"uses the IPython magic or shell command {magic or func.attr}", node)
                return
            self.generic_visit(node)

        def _function(self, node):
            for decorator in getattr(node, "decorator_list", []):
                self.visit(decorator)
            args = node.args
            for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
                self.visit(default)
            params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
            params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
            self.local.append(set(params) | self._locals_of(node))
            self.global_names.append(set())
            for statement in node.body if isinstance(node.body, list) else [node.body]:
                self.visit(statement)
            self.global_names.pop()
            self.local.pop()

        def _locals_of(self, node):
            declared = {n for s in ast.walk(node) if isinstance(s, (ast.Global, ast.Nonlocal)) for n in s.names}
            body = node.body if isinstance(node.body, list) else [node.body]
            bound = set()
            for statement in body:
                bound |= _bound_names(statement)
            return bound - declared

        def visit_FunctionDef(self, node):
            if len(self.local) == 1:
                self._rebinds(node.name, node)
            self._function(node)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Lambda(self, node):
            self._function(node)

        def visit_ListComp(self, node):
            self.local.append({n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)})
            self.global_names.append(set())
            self.generic_visit(node)
            self.global_names.pop()
            self.local.pop()

        visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

        def visit_ClassDef(self, node):
            if len(self.local) == 1:
                self._rebinds(node.name, node)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _DUNDER.match(item.name) \
                        and item.name not in ALLOWED_DUNDERS:
                    flag(f"defines the method {item.name}, which can make any answer compare as right", item)
            for base in node.bases + [k.value for k in node.keywords] + node.decorator_list:
                self.visit(base)
            self.local.append(set())
            self.global_names.append(set())
            for statement in node.body:
                self.visit(statement)
            self.global_names.pop()
            self.local.pop()

    visitor = Visitor()
    visitor.global_names = []
    visitor.visit(tree)
    return reasons


def neutralised_source(reasons) -> str:
    """The source that replaces a flagged cell: it raises, naming the reasons."""
    text = "; ".join(reasons)
    return f"raise RuntimeError({('robustlab grading: this cell was not run: ' + text)!r})\n"


# --------------------------------------------------------------------------- rebuilding the notebook


class Rebuilt:
    """The notebook to grade and what was changed to make it (see :func:`rebuild`)."""

    def __init__(self, nb, notes, flagged):
        self.nb = nb
        self.notes = notes  # list of str: metadata repaired, cells restored, ...
        self.flagged = flagged  # {cell id: [reasons]}: student cells not run

    def __repr__(self):
        return f"Rebuilt(notes={self.notes!r}, flagged={self.flagged!r})"


def _visible(source) -> str:
    """A test cell's source without its hidden tests (which only the instructor's copy has)."""
    source = "".join(source) if isinstance(source, list) else source
    return re.sub(r"[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", "", source, flags=re.S).rstrip()


_KEYS = ("grade", "grade_id", "locked", "points", "solution", "task")


def _meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _student_cell(cell, index):
    code = cell.get("cell_type") == "code"
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(source)
    if not isinstance(source, str):
        source = ""
    new = {"cell_type": "code" if code else "markdown", "metadata": {}, "source": source,
           "id": f"student-cell-{index}"}
    if code:
        new.update(outputs=[], execution_count=None)
    return new


def rebuild(submitted: dict, released: dict, *, protected=(), imports=None) -> Rebuilt:
    """The notebook to grade: ``released`` with the student's code from ``submitted``.

    Both arguments are notebooks as dicts (nbformat 4). Every cell of the release is kept,
    in the release's order, with its own source and metadata, except that answer cells
    (``solution: true``) take the source of the first submitted cell with their
    ``grade_id``, and the release's cells without grading metadata (the student may edit
    them) take the source of the submitted cell with their cell id, or are left out if the
    student deleted them. Cells the student added (no grading metadata, or a ``grade_id``
    the release does not have, which is removed and reported) are kept after the release
    cell that preceded them in the submission. Student code is checked with :func:`check_code`;
    a flagged cell is replaced by :func:`neutralised_source`.
    """
    if not isinstance(submitted, dict) or not isinstance(submitted.get("cells"), list):
        raise ValueError("submitted: not a notebook (no list of cells)")
    notes, flagged = [], {}
    release_cells = released["cells"]
    by_id = {_meta(c).get("grade_id"): c for c in release_cells if _meta(c).get("grade_id")}
    # cells of the release without grading metadata are the student's to edit or delete: matched by cell id
    free = {c.get("id"): c for c in release_cells if not _meta(c) and c.get("id")}
    answers, extra_after, seen, free_sources = {}, {}, {}, {}
    anchor = None  # grade_id of the last release cell met in the submission
    for index, cell in enumerate(submitted["cells"]):
        if not isinstance(cell, dict):
            notes.append(f"cell {index} is not a cell; ignored")
            continue
        meta = _meta(cell)
        grade_id = meta.get("grade_id")
        if grade_id is not None and grade_id in by_id:
            seen[grade_id] = seen.get(grade_id, 0) + 1
            if seen[grade_id] > 1:
                notes.append(f"duplicate grading metadata {grade_id!r} removed from cell {index}")
                extra_after.setdefault(anchor, []).append(_student_cell(cell, index))
                continue
            original = by_id[grade_id]
            if _meta(original).get("solution") and original["cell_type"] == "code":
                answers[grade_id] = _student_cell(cell, index)["source"]
            else:
                src = cell.get("source", "")
                src = "".join(src) if isinstance(src, list) else src
                if _visible(src) != _visible(original["source"]):
                    notes.append(f"cell {grade_id!r} was edited; the instructor's version is graded")
                if {k: meta.get(k) for k in _KEYS} != {k: _meta(original).get(k) for k in _KEYS}:
                    notes.append(f"grading metadata of {grade_id!r} was edited; the instructor's is used")
            anchor = grade_id
            continue
        if grade_id is not None or meta:
            notes.append(f"unknown grading metadata {str(grade_id)!r} removed from cell {index}")
        elif cell.get("id") in free and cell.get("id") not in free_sources \
                and cell.get("cell_type") == free[cell.get("id")]["cell_type"]:
            free_sources[cell["id"]] = _student_cell(cell, index)["source"]
            anchor = ("free", cell["id"])
            continue
        if cell.get("cell_type") == "code":
            extra_after.setdefault(anchor, []).append(_student_cell(cell, index))
    for grade_id, original in by_id.items():
        if grade_id not in seen:
            kind = "test" if _meta(original).get("grade") and not _meta(original).get("solution") else "cell"
            notes.append(f"{kind} {grade_id!r} was missing; the instructor's is graded")
    if (submitted.get("metadata", {}).get("kernelspec") or {}).get("name") != \
            (released.get("metadata", {}).get("kernelspec") or {}).get("name"):
        notes.append("the notebook's kernel was changed; the lab's is used")

    cells = []
    leading = extra_after.pop(None, [])
    for i, original in enumerate(release_cells):
        cell = copy.deepcopy(original)
        grade_id = _meta(cell).get("grade_id")
        key = grade_id
        if not _meta(cell):
            key = ("free", cell.get("id"))
            if cell.get("id") not in free_sources:
                continue  # deleted by the student
            cell["source"] = free_sources[cell["id"]]
        elif grade_id in answers:
            cell["source"] = answers[grade_id]
        cells.append(cell)
        if i == 0:
            cells.extend(leading)
        cells.extend(extra_after.get(key, []))
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        meta = _meta(cell)
        student = not meta or meta.get("solution")
        if not student:
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        reasons = check_code(source, protected=protected, imports=imports)
        if reasons:
            flagged[cell.get("id") or meta.get("grade_id")] = reasons
            cell["source"] = neutralised_source(reasons)
        cell["outputs"], cell["execution_count"] = [], None
    nb = {"cells": cells, "metadata": copy.deepcopy(released.get("metadata", {})),
          "nbformat": released.get("nbformat", 4), "nbformat_minor": released.get("nbformat_minor", 5)}
    return Rebuilt(nb, notes, flagged)
