#!/usr/bin/env python3
"""Makes the virtual environment the server's Python tests run in: the official `openai` client
from PyPI, pinned so that CI runs are reproducible. Idempotent (a ready venv is left alone).
usage: python3 tests/server/python_env.py VENV_DIR"""
import os
import subprocess
import sys

# The client version the tests were written against (its API and its SSE handling).
OPENAI_PIN = "openai==3.57.0"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    venv = sys.argv[1]
    python = os.path.join(venv, "bin", "python")
    check = [python, "-c", f"import openai, sys; sys.exit(openai.__version__ != '{OPENAI_PIN.split('==')[1]}')"]
    if os.path.exists(python) and subprocess.run(check).returncode == 0:
        print(f"{venv}: {OPENAI_PIN} already installed")
        return 0
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", OPENAI_PIN], check=True)
    subprocess.run(check, check=True)
    print(f"{venv}: installed {OPENAI_PIN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
