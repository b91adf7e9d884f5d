#!/usr/bin/env bash
# Writes requirements.lock: every package pip resolves for pointvl[all] (Python 3.11, Linux),
# pinned. scripts/setup.sh installs from it, so a fresh machine gets exactly these versions.
# Re-run after changing a pin in pyproject.toml (and environment.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
"$PY" -m pip install --dry-run --ignore-installed --quiet --report "$report" -e ".[all]" >/dev/null
"$PY" - "$report" > requirements.lock <<'PYEOF'
import json, re, sys
pkgs = sorted(
    (re.sub(r"[-_.]+", "-", m["metadata"]["name"]).lower(), m["metadata"]["version"])
    for m in json.load(open(sys.argv[1]))["install"]
    if m["metadata"]["name"].lower() != "pointvl"
)
print("# pointvl[all], resolved by scripts/lock.sh (pip's resolver; Python 3.11, Linux x86_64).")
print("# Install: pip install -r requirements.lock && pip install --no-deps -e .")
print("# torch is the CPU build: this project's machines serve it through pip's find-links;")
print("# elsewhere add: --extra-index-url https://download.pytorch.org/whl/cpu")
for name, version in pkgs:
    print(f"{name}=={version}")
PYEOF
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) packages)"
