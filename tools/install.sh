#!/usr/bin/env bash
# Install mmvfm and its pinned OpenMMLab stack into the Python environment
# this is run with (an activated venv / conda env, or the system Python; no
# environment is created). Idempotent: a second run installs nothing.
#
#   bash tools/install.sh            # runtime + test + mim dependencies
#
# Environment:
#   PYTHON          interpreter to install into (default: python, else python3)
#   MAX_JOBS        parallel compile jobs (mmcv from source, mmvfm's ops) (2)
#   MMVFM_WITH_OPS  1 (default where a C++ compiler is found): build mmvfm's
#                   compiled ops (mmvfm._ext, ~1 min on 2 cores); 0: none,
#                   the ops run their PyTorch reference
#
# Order matters: torch first (kept if present: bring your own CUDA build),
# then torchvision matching it (--no-deps: never replaces torch), then mmcv
# built against that torch (--no-build-isolation), then the rest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$(command -v python || command -v python3)}"
PIP=("$PY" -m pip --disable-pip-version-check)
TORCH_PIN="2.13.0"
MMCV_PIN="2.1.0"

log() { printf '[install] %s\n' "$*"; }
has() { "$PY" - "$@" <<'EOF'
import sys
from importlib import metadata
name, want = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
try:
    version = metadata.version(name)
except metadata.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if want is None or version.split('+')[0] == want else 1)
EOF
}

log "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

# 1. torch: keep the user's, else the tested pin.
if has torch; then
    log "torch $("$PY" -c 'from importlib.metadata import version as v; print(v("torch"))') already installed: kept"
else
    log "installing torch==${TORCH_PIN}"
    "${PIP[@]}" install "torch==${TORCH_PIN}"
fi

# 2. torchvision (mmpretrain's models import it) matching the torch minor
#    version: torch 2.N <-> torchvision 0.(N+15). --no-deps so that it can
#    never pull another torch.
if has torchvision; then
    log "torchvision already installed: kept"
else
    TV_PIN="$("$PY" -c '
from importlib.metadata import version
major, minor = version("torch").split("+")[0].split(".")[:2]
assert major == "2", "mmvfm needs torch 2.x"
print(f"0.{int(minor) + 15}.*")')"
    log "installing torchvision==${TV_PIN} (no deps)"
    "${PIP[@]}" install --no-deps "torchvision==${TV_PIN}"
fi

# 3. mmcv with compiled ops, built against the installed torch. A prebuilt
#    wheel on PIP_FIND_LINKS is used when it matches; else pip builds the
#    sdist (~20 min on 2 cores), which needs setuptools<81 and ninja.
if has mmcv "$MMCV_PIN" && "$PY" -c 'import mmcv.ops' >/dev/null 2>&1; then
    log "mmcv ${MMCV_PIN} with ops already installed: kept"
else
    log "installing mmcv==${MMCV_PIN} (build tools first)"
    "${PIP[@]}" install -r requirements/build.txt
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
        "${PIP[@]}" install --no-build-isolation "mmcv==${MMCV_PIN}"
fi

# 4. The pinned runtime stack and the test tools.
"${PIP[@]}" install -q -r requirements/runtime.txt -r requirements/tests.txt \
    -r requirements/mim.txt

# 5. openmim without its opendatalab dependency chain (which would
#    downgrade setuptools and requests); `mim train mmvfm ...` needs only
#    what requirements/mim.txt installs.
if has openmim; then
    log "openmim already installed: kept"
else
    "${PIP[@]}" install -q --no-deps openmim==0.3.9
fi

# 6. mmvfm itself, editable, from this checkout, with its compiled ops
#    (mmvfm/ops/csrc) unless MMVFM_WITH_OPS=0 or no C++ compiler is found.
WITH_OPS="${MMVFM_WITH_OPS:-}"
if [ -z "$WITH_OPS" ]; then
    if command -v "${CXX:-c++}" >/dev/null 2>&1; then
        WITH_OPS=1
    else
        WITH_OPS=0
        log "no C++ compiler (${CXX:-c++}): mmvfm's ops will run their PyTorch reference"
    fi
fi
ops_ok() { [ "$WITH_OPS" = 0 ] || "$PY" -c 'import mmvfm._ext' >/dev/null 2>&1; }
if "$PY" - "$ROOT" <<'EOF'
import json, os, sys
from importlib import metadata
try:
    dist = metadata.distribution('mmvfm')
except metadata.PackageNotFoundError:
    sys.exit(1)
info = json.loads(dist.read_text('direct_url.json') or '{}')
url = info.get('url', '')
ok = info.get('dir_info', {}).get('editable') and url.startswith('file://') \
    and os.path.samefile(url[len('file://'):], sys.argv[1])
sys.exit(0 if ok else 1)
EOF
then
    installed=1
else
    installed=0
fi
if [ "$installed" = 1 ] && ops_ok; then
    log "mmvfm already installed from ${ROOT}: kept"
else
    log "installing mmvfm (editable, MMVFM_WITH_OPS=${WITH_OPS}) from ${ROOT}"
    if ! MMVFM_WITH_OPS="$WITH_OPS" MAX_JOBS="${MAX_JOBS:-2}" \
        "${PIP[@]}" install -q --no-deps --no-build-isolation -e .; then
        [ "$WITH_OPS" = 1 ] || exit 1
        log "building mmvfm's ops failed: installing without them (PyTorch reference)"
        MMVFM_WITH_OPS=0 "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
    fi
fi

# 7. Check: versions, stack fixes, registries.
"$PY" - <<'EOF'
import mmvfm
from mmvfm.utils import check_versions
from mmvfm.compat import apply_compat
versions = check_versions()
print('[install] mmvfm', mmvfm.__version__, 'ready:',
      ', '.join(f'{k} {v}' for k, v in versions.items()))
print('[install] stack fixes applied:', ', '.join(apply_compat()) or 'none')
from mmvfm.ops import ext_available
print('[install] compiled ops:', 'built' if ext_available() else
      'not built (PyTorch reference)')
EOF
