"""The package as a user gets it: the wheel builds, installs into a fresh venv, and its ``logpull`` runs
there, with the version, licence and data of this checkout; the version is written in one place."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import yaml

import logpull_dagster

REPO = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once_and_setup_py_reads_it():
    assert re.fullmatch(r"\d+\.\d+\.\d+", logpull_dagster.__version__)
    setup = (REPO / "setup.py").read_text()
    assert "version=VERSION" in setup and 'license="Apache-2.0"' in setup
    assert not re.search(r"\d+\.\d+\.\d+", (REPO / "setup.py").read_text().split("setup(", 1)[1].split(
        "install_requires")[0]), "a version written in setup.py itself"
    assert f"## [{logpull_dagster.__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_the_licence_is_the_whole_apache_2_text():
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    # byte for byte the text at https://www.apache.org/licenses/LICENSE-2.0.txt
    assert hashlib.md5((REPO / "LICENSE").read_bytes()).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"


def run(cmd: list[str | Path], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180, **kw)
    assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
    return res


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_its_logpull_runs(tmp_path):
    began = time.monotonic()
    # Built from a copy: setuptools writes build/ and *.egg-info beside setup.py, and other tests read the repo.
    src = tmp_path / "src"
    shutil.copytree(REPO / "logpull_dagster", src / "logpull_dagster",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    # As a user builds it: pip's isolated build, with setuptools from the configured index.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist", src])
    [wheel] = (tmp_path / "dist").glob("*.whl")
    version = logpull_dagster.__version__
    assert wheel.name == f"logpull_dagster-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"logpull_dagster-{version}.dist-info"
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert {"logpull_dagster/py.typed", "logpull_dagster/_version.py", f"{dist_info}/entry_points.txt"} <= names
    assert any(n.startswith(f"{dist_info}/") and n.endswith("LICENSE") for n in names), names
    assert not [n for n in names if n.startswith("logpull_dagster_tests")]
    assert f"\nVersion: {version}\n" in metadata
    assert re.search(r"^License(-Expression)?: Apache-2.0$", metadata, re.M), metadata[:1500]

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel])
    # The dependencies (Dagster and the rest) from this interpreter's site-packages, after the venv's own:
    # a path in a .pth file is added as it is (its own .pth files, such as the editable install's finder
    # of this checkout, are not run), so logpull_dagster must come from the wheel (asserted below).
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOGPULL_CONFIG", "DAGSTER_HOME")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    home = tmp_path / "elsewhere"  # not the repo: nothing of the checkout on the path
    home.mkdir()
    where = run([python, "-c", "import importlib.metadata as m, logpull_dagster as p; "
                               "print(p.__file__); print(p.__version__); print(m.version('logpull-dagster'))"],
                env=env, cwd=home).stdout.split()
    assert where[0].startswith(str(site)), where
    assert where[1:] == [version, version]

    assert run([bin_dir / "logpull", "--version"], env=env, cwd=home).stdout == f"logpull-dagster {version}\n"
    assert "exit codes:" in run([bin_dir / "logpull", "--help"], env=env, cwd=home).stdout
    # A command that loads the config model and the plug-in registry of the installed package.
    (home / "logpull.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "okta", "type": "okta", "base_url": "https://x.okta.com", "token": {"env": "X"},
        "start": "2026-01-01T00:00:00Z", "pagesize": 100}]}))
    bad = subprocess.run([bin_dir / "logpull", "status"], env=env, cwd=home, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert "  - sources[0] (okta).pagesize: unknown key; did you mean 'page_size'?" in bad.stderr
    took = time.monotonic() - began
    print(f"wheel built, installed and run in {took:.1f} s")
    assert took < 60  # about 15 s on a quiet 2-core machine
