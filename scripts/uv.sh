#!/usr/bin/env bash
# uv, the tool that makes and installs the lock files, at the version pinned (with hashes) in
# requirements-uv.txt: `scripts/uv.sh pip sync ...`. The first call installs it into .venv-uv
# with pip; scripts/setup.sh, scripts/setup-vllm.sh and scripts/lock.sh go through here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tool="$root/.venv-uv"
stamp="$tool/.uv-$(sha256sum "$root/requirements-uv.txt" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "${PYTHON:-python3}" -m venv --clear "$tool"
    # -qq: errors only (a machine's pip configuration can name index folders that do not exist,
    # which pip reports as warnings on a user's first screen)
    "$tool/bin/pip" install --quiet --quiet --disable-pip-version-check --no-deps --require-hashes \
        -r "$root/requirements-uv.txt"
    touch "$stamp"
fi
# uv reads no pip configuration: torch's CPU build (2.13.0+cpu; PyPI has no +cpu builds) lies in
# the folder that pip's find-links names on this machine.
if [ -z "${UV_FIND_LINKS:-}" ] && [ -d /opt/wheels ]; then export UV_FIND_LINKS=/opt/wheels; fi
export UV_PYTHON_DOWNLOADS=never  # every venv uses the machine's own Python
exec "$tool/bin/uv" "$@"
