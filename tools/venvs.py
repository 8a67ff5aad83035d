"""Virtual environments for running the kit under other versions than its own: `make compat` (.venv-compat,
requirements-compat.txt) and `make hub` (.venv-hub-<profile>, requirements-hub-<profile>.txt).

Each venv is built from one requirements file with one Python, and rebuilt from scratch when either changes: a
stamp inside it records the Python version and a hash of the file, so that a venv never holds packages from an
older set of pins.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

STAMP = ".built-from.json"


def python_version(python: str) -> str | None:
    """'3.12.1' for an interpreter that runs, else None (a missing file, or a pyenv shim for a version that is
    not the active one, which exits with an error)."""
    try:
        done = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(python: str) -> str:
    """A runnable interpreter for `python` (a command such as python3.12, or a path). When a pythonX.Y command
    does not run, pyenv's newest X.Y.* build is used. Raises SystemExit naming what was tried."""
    if python_version(python):
        return shutil.which(python) or python
    match = re.fullmatch(r"python(\d+\.\d+)", Path(python).name)
    tried = [python]
    if match:
        builds = sorted(Path.home().glob(f".pyenv/versions/{match.group(1)}.*/bin/{python}"),
                        key=lambda path: [int(n) for n in re.findall(r"\d+", path.parts[-3])])
        for candidate in reversed(builds):
            tried.append(str(candidate))
            if python_version(str(candidate)):
                return str(candidate)
    raise SystemExit(f"error: no runnable interpreter for {python} (tried {', '.join(tried)}); install that Python "
                     f"or name its path: make hub HUB_PYTHON=/path/to/python3.12, make compat "
                     f"COMPAT_PYTHON=/path/to/python3.10")


def built_from(python: str, requirements: Path) -> dict:
    """What a venv is built from: the Python version and the sha256 of the requirements file."""
    return {"python": python_version(python), "requirements": Path(requirements).name,
            "sha256": hashlib.sha256(Path(requirements).read_bytes()).hexdigest()}


def build_venv(venv: Path, python: str, requirements: Path) -> Path:
    """`venv` with `python` and every package of `requirements` installed; built once, rebuilt from scratch when
    the file or the Python version changed since. Returns the venv's interpreter."""
    venv, interpreter = Path(venv), Path(venv) / "bin" / "python"
    wanted = built_from(python, requirements)
    stamp = venv / STAMP
    if stamp.is_file() and interpreter.exists() and json.loads(stamp.read_text()) == wanted:
        return interpreter
    if venv.exists():
        print(f"{venv.name}: {requirements.name} or the Python version changed since it was built; rebuilding it.")
        shutil.rmtree(venv)
    print(f"Building {venv.name} with Python {wanted['python']} and {requirements.name} (several GB the first "
          f"time: torch comes with its CUDA libraries) ...", flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(interpreter), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r",
                    str(requirements)], check=True)
    stamp.write_text(json.dumps(wanted, indent=1) + "\n")
    return interpreter
