"""The package's shape: one import name, layers one way, no TensorFlow in the device runtime."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> the import name it is installed as (pyproject.toml's package-dir)
PACKAGES = {"api": "edgesight", "edge": "edgesight.edge", "training": "edgesight.training",
            "convert": "edgesight.convert", "firmware_configs": "edgesight.firmware_configs"}
BARE = {"edge", "convert", "training", "firmware_configs", "api"}
BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def _modules(folder: str):
    """(import name, path) of every module under ``folder``."""
    base = PACKAGES[folder]
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT / folder).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join([base, *parts]), path


def _imports(path: Path):
    """(line, absolute module name) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def test_no_module_imports_a_folder_by_its_bare_name():
    # `import edge...` from the repository root would load a second copy of every class.
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}"
           for folder in PACKAGES for _, path in _modules(folder)
           for line, name in _imports(path) if name.split(".")[0] in BARE]
    assert bad == []


def test_the_check_above_finds_a_bare_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom edge.model import bundle\nfrom .x import y\n")
    assert [name for _, name in _imports(probe)] == ["os", "edge.model"]


def test_loggers_are_named_edgesight():
    bad = []
    for folder in PACKAGES:
        for _, path in _modules(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger" and node.args
                        and not (isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("edgesight"))):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bad == []


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for folder in PACKAGES for _, p in _modules(folder)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}


def test_every_device_runtime_module_imports_without_tensorflow():
    names = [name for name, _ in _modules("edge")] + ["edgesight", "edgesight.cli"]
    code = BLOCK_TF + (
        "import importlib\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "import edgesight as es\n"
        "assert es.Classifier.__module__ == 'edgesight.edge.classifier'\n"
        "print(len(" + repr(names) + "))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == len(names) > 40


def test_layers_contract(tmp_path):
    """`lint-imports` with the contracts of pyproject.toml, on the package laid out as installed."""
    pytest.importorskip("importlinter")
    tree = tmp_path / "edgesight"
    shutil.copytree(ROOT / "api", tree, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("edge", "training", "convert", "firmware_configs"):
        shutil.copytree(ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout
    # The same contracts fail on an upward import.
    (tree / "edge" / "upward.py").write_text("from edgesight.training import config\n")
    r = subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "edgesight.edge.upward -> edgesight.training.config" in r.stdout


def test_wheel_installs_one_import_name(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("edgesight-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert z.read(info).decode().split() == ["edgesight"]
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgesight"}
    # every package folder and the device data travel in it
    for folder in PACKAGES:
        for name, path in _modules(folder):
            assert name.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py" else ".py") in names
    for data in ("edgesight/firmware_configs/rpi5.yaml", "edgesight/firmware_configs/install.sh.in",
                 "edgesight/firmware_configs/presets/qc-line.yaml", "edgesight/edge/web/static/live.html",
                 "edgesight/edge/web/static/live.js", "edgesight/edge/web/static/review.html",
                 "edgesight/edge/web/static/review.js", "edgesight/edge/web/static/common.js",
                 "edgesight/edge/web/static/style.css", "edgesight/edge/web/static/serve.html",
                 "edgesight/edge/web/static/serve.js"):
        assert data in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
