"""Structure of the degradation registry: tasks.py (mechanism) never imports catalog.py (the
built-in tasks); the package imports the catalog once, and a failing catalog import surfaces as
its own error on every try instead of an empty registry and a misleading "unknown task"."""
import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxsr" / "degradations"
BUILTINS = ["aniso_gaussian_blur", "bicubic", "color_shift", "defocus_blur", "gaussian_blur",
            "gaussian_noise", "haze", "jpeg", "motion_blur", "poisson_noise",
            "rain", "realesrgan_first_order", "spatial_blur_mix"]


def _imports(path: pathlib.Path, module: str) -> set:
    """Module names imported by a file (absolute and relative; `from a import b` gives a, a.b)."""
    pkg = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("jaxsr."):
            out.add(node.value)        # importlib.import_module("jaxsr....") and the like
    return out


def test_tasks_module_never_imports_catalog():
    names = _imports(PKG / "tasks.py", "jaxsr.degradations.tasks")
    assert not any("catalog" in n for n in names), sorted(names)


def test_no_import_circle_inside_degradations():
    mods = {f"jaxsr.degradations.{p.stem}": p for p in PKG.glob("*.py") if p.stem != "__init__"}
    graph = {m: {t for t in _imports(p, m) if t in mods and t != m} for m, p in mods.items()}

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    circular = sorted(m for m in graph if reaches(m, m, set()))
    assert not circular, f"modules on an import circle: {circular}"


# Runs in a fresh interpreter: makes the catalog import fail (`where`), uses the package twice,
# then lifts the fault and checks that a third try loads the full registry.
_SCRIPT = textwrap.dedent(r'''
    import importlib.abc, importlib.machinery, json, sys
    where = sys.argv[1]

    class SimulatedFailure(RuntimeError):
        pass

    class FailingLoader(importlib.machinery.SourceFileLoader):
        """catalog.py: run all of its real code, then fail (after it registered the tasks)."""
        def get_code(self, fullname):
            src = self.get_data(self.path) + (b"\nraise __import__('__main__').SimulatedFailure("
                                                  b"'boom in catalog')\n")
            return compile(src, self.path, "exec", dont_inherit=True)

    class BrokenDependency(importlib.abc.Loader):
        """weather.py (imported by catalog.py, before any task is registered) fails."""
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            raise SimulatedFailure("boom in a module the catalog imports")

    class Finder(importlib.abc.MetaPathFinder):
        calls = 0
        def find_spec(self, name, path=None, target=None):
            target_name = {"catalog_end": "jaxsr.degradations.catalog",
                           "dependency": "jaxsr.degradations.weather"}[where]
            if name != target_name:
                return None
            Finder.calls += 1
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if where == "catalog_end":
                spec.loader = FailingLoader(spec.loader.name, spec.loader.path)
            else:
                spec.loader = BrokenDependency()
            return spec

    finder = Finder()
    sys.meta_path.insert(0, finder)
    errors = []
    uses = [
        lambda: __import__("jaxsr.degradations", fromlist=["get_task"]).get_task("jpeg"),
        lambda: __import__("jaxsr.degradations", fromlist=["x"]).synthesize_tasks,
    ]
    for use in uses:
        try:
            use()
            errors.append(None)
        except Exception as e:  # noqa: BLE001
            errors.append([type(e).__name__, str(e)])
    calls = Finder.calls
    sys.meta_path.remove(finder)
    import jaxsr.degradations as D
    print(json.dumps({"errors": errors, "calls": calls, "names": D.task_names(),
                      "jpeg": D.get_task("jpeg").name,
                      "aux": D.default_auxiliary_tasks()}))
''')


@pytest.mark.parametrize("where", ["dependency", "catalog_end"])
def test_catalog_import_failure_surfaces_every_time(where):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, where], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # First and second use both raise the real error (not UnknownTaskError / "unknown task").
    assert len(out["errors"]) == 2
    for err in out["errors"]:
        assert err is not None, out
        kind, msg = err
        assert kind == "SimulatedFailure" and "boom" in msg, err
        assert "unknown" not in msg.lower()
    assert out["calls"] == 2          # the catalog load really was retried, not cached
    # Once the fault is gone, the package loads with every built-in task.
    assert out["names"] == BUILTINS
    assert out["jpeg"] == "jpeg"
    assert sorted(out["aux"]) == BUILTINS


def test_unknown_name_suggests_close_matches():
    from jaxsr import degradations as D

    with pytest.raises(D.UnknownTaskError) as info:
        D.get_task("gausian_blur")
    msg = str(info.value)
    assert isinstance(info.value, KeyError)
    assert "unknown distortion task 'gausian_blur'" in msg
    assert "Did you mean 'gaussian_blur'" in msg
    assert "Registered tasks: " in msg and "jpeg" in msg and "register_task" in msg


def test_register_tasks_is_all_or_none():
    from jaxsr.degradations import tasks as T

    before = T.task_names()
    fresh = T.DistortionTask("registry_test_fresh", "blur")
    with pytest.raises(ValueError, match="already registered"):
        T.register_tasks([fresh, T.DistortionTask("jpeg", "compression")])
    with pytest.raises(ValueError, match="twice"):
        T.register_tasks([fresh, fresh], overwrite=True)
    with pytest.raises(TypeError):
        T.register_tasks([fresh, "jpeg"])
    assert T.task_names() == before       # nothing was added by the failed calls


def test_public_api_unchanged():
    from jaxsr import degradations as D

    for name in ["Bernoulli", "LogUniform", "Uniform", "DistortionTask", "UnknownTaskError",
                 "default_auxiliary_tasks", "get_task", "register_task", "synthesize",
                 "synthesize_tasks", "task_names"]:
        assert name in D.__all__ and hasattr(D, name), name
    assert set(BUILTINS) <= set(D.task_names())
    assert D.default_auxiliary_tasks() == [
        "bicubic", "gaussian_blur", "aniso_gaussian_blur", "motion_blur", "defocus_blur",
        "gaussian_noise", "poisson_noise", "jpeg", "color_shift", "realesrgan_first_order",
        "spatial_blur_mix", "rain", "haze"]
