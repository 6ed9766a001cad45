"""Packaging: one `deepclust` package in the wheel, and a runtime that never needs torch."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("runtime", "trainer", "cli")

# Runs code in a fresh interpreter where torch, scikit-learn, scipy and onnx cannot be imported,
# as on a base install: the scoring side must not need them.
BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'sklearn', 'scipy', 'onnx'}:
            raise ImportError(f'{name} is blocked: base install')
sys.meta_path.insert(0, Block())
"""


def test_wheel_holds_only_the_deepclust_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("deepclust-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"deepclust"}
    for sub in SUBPACKAGES:
        assert f"deepclust/{sub}/__init__.py" in names
    assert "deepclust/__init__.py" in names
    assert not any(n.startswith("deepclust/tests") or n.startswith("deepclust/benchmarks") for n in names)


def _python(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)


def test_importing_the_runtime_does_not_import_torch():
    r = _python("import sys, deepclust.runtime; print('torch' in sys.modules, 'sklearn' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_cli_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from deepclust.cli.main import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; print('torch' in sys.modules)")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_assign_works_without_torch_or_sklearn(tmp_path, reference_bundle):
    np.save(tmp_path / "in.npy", np.random.default_rng(0).integers(0, 17, (100, 64)).astype(np.float32))
    code = BLOCKER + (
        "import sys\nfrom deepclust.cli.main import app\n"
        f"sys.argv = ['deepclust', 'assign', {str(reference_bundle)!r}, {str(tmp_path / 'in.npy')!r}, "
        f"'-o', {str(tmp_path / 'out.parquet')!r}]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules\n")
    r = _python(code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scored 100 rows" in r.stdout
    assert (tmp_path / "out.parquet").is_file()


def test_bare_folder_names_are_not_importable_in_the_suite():
    # pytest runs with --import-mode=importlib, so the tests see only `deepclust.*`; a stray
    # `import runtime` cannot pass here and then fail for users.
    import importlib.util

    for sub in SUBPACKAGES:
        assert importlib.util.find_spec(sub) is None, sub


@pytest.mark.parametrize("module", ["deepclust.trainer.datasets", "deepclust.trainer.metrics"])
def test_trainer_data_and_metrics_modules_do_not_need_torch(module):
    r = _python(f"import sys, {module}; print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
