#!/usr/bin/env bash
# Install mmvfm and its pinned OpenMMLab stack into the Python environment
# this is run with (an activated venv / conda env, or the system Python; no
# environment is created). Idempotent: a second run installs nothing.
#
#   bash tools/install.sh                 # runtime + test + mim dependencies
#   bash tools/install.sh --no-editable   # mmvfm as a regular install (mim)
#
# Environment:
#   PYTHON          interpreter to install into (default: python, else python3)
#   MAX_JOBS        parallel compile jobs (mmcv from source, mmvfm's ops) (2)
#   MMVFM_WITH_OPS  1 (default where a C++ compiler is found): build mmvfm's
#                   compiled ops (mmvfm._ext, ~1 min on 2 cores); 0: none,
#                   the ops run their PyTorch reference
#   MMVFM_EDITABLE  1 (default) or 0, the same as --editable / --no-editable
#
# Editable (default) or regular install of mmvfm (step 6), the trade-off:
#   editable: `import mmvfm` runs this checkout, an edit is live at once;
#     but openmim 0.3.9 finds nothing: it looks for <site-packages>/mmvfm
#     and its .mim/ (configs, tools, model-index.yml), which an editable
#     (PEP 660) install does not create, so `mim train/test/run/search
#     mmvfm ...` fail and `mim list` omits mmvfm. Use tools/*.py directly.
#   regular (--no-editable): a copy in site-packages with .mim/ holding
#     copies of configs/, tools/ and model-index.yml, so every mim command
#     works; but it is a snapshot: an edit of the checkout reaches it only
#     when this script (or `pip install .`) runs again, which it then does
#     (the copy is compared file by file with the checkout). The tools run
#     from the checkout (python tools/train.py ...) still import the
#     checkout's mmvfm/ (they put the checkout first on sys.path), whose
#     compiled ops exist only if an editable build wrote them there
#     (mmvfm/_ext*.so); a regular build puts them into the copy alone.
#
# Order matters: torch first (kept if present: bring your own CUDA build),
# then torchvision matching it (--no-deps: never replaces torch), then mmcv
# built against that torch (--no-build-isolation), then the rest.
set -euo pipefail

EDITABLE="${MMVFM_EDITABLE:-1}"
for arg in "$@"; do
    case "$arg" in
        --editable) EDITABLE=1 ;;
        --no-editable) EDITABLE=0 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d'
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument $arg (--editable, --no-editable)" >&2
            exit 2
            ;;
    esac
done
case "$EDITABLE" in
    0 | 1) ;;
    *)
        echo "install.sh: MMVFM_EDITABLE must be 0 or 1, not '$EDITABLE'" >&2
        exit 2
        ;;
esac

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

# 6. mmvfm itself from this checkout, editable (default) or regular
#    (--no-editable / MMVFM_EDITABLE=0; see the header), with its compiled
#    ops (mmvfm/ops/csrc) unless MMVFM_WITH_OPS=0 or no C++ compiler is
#    found. Kept when the install is already of this checkout in this mode
#    (a regular one only while its files equal the checkout's), with the
#    ops where they are asked for.
WITH_OPS="${MMVFM_WITH_OPS:-}"
if [ -z "$WITH_OPS" ]; then
    if command -v "${CXX:-c++}" >/dev/null 2>&1; then
        WITH_OPS=1
    else
        WITH_OPS=0
        log "no C++ compiler (${CXX:-c++}): mmvfm's ops will run their PyTorch reference"
    fi
fi
# The Python snippets drop sys.path[0], this folder: there `import mmvfm`
# would find the checkout's mmvfm/ (and metadata its egg-info), not the
# installed package.
ops_ok() {
    [ "$WITH_OPS" = 0 ] ||
        "$PY" -c 'import sys; sys.path.pop(0); import mmvfm._ext' >/dev/null 2>&1
}
if "$PY" - "$ROOT" "$EDITABLE" <<'EOF'
import base64, hashlib, json, os, sys
sys.path.pop(0)
from importlib import metadata
root, want_editable = sys.argv[1], sys.argv[2] == '1'
try:
    dist = metadata.distribution('mmvfm')
except metadata.PackageNotFoundError:
    sys.exit(1)
info = json.loads(dist.read_text('direct_url.json') or '{}')
url = info.get('url', '')
src = url[len('file://'):]
if not (url.startswith('file://') and os.path.isdir(src)
        and os.path.samefile(src, root)):
    sys.exit(1)  # not installed from this checkout
editable = bool(info.get('dir_info', {}).get('editable'))
if editable != want_editable:
    sys.exit(1)
if editable:
    sys.exit(0)


def digest(path):
    with open(path, 'rb') as f:
        raw = hashlib.sha256(f.read()).digest()
    return 'sha256=' + base64.urlsafe_b64encode(raw).decode().rstrip('=')


# A regular install is a copy, kept only while each of its files equals
# the checkout's and the checkout has no file it lacks (mmvfm/*.py and
# csrc, configs/, tools/ and model-index.yml, copied into mmvfm/.mim/).
installed = {}
for f in dist.files or []:
    name = f.as_posix()
    if (name.startswith('mmvfm/') and f.hash is not None
            and '__pycache__' not in name and not name.endswith('.so')):
        installed[name] = f'{f.hash.mode}={f.hash.value}'
for name, want in installed.items():
    rel = name[len('mmvfm/.mim/'):] if name.startswith('mmvfm/.mim/') else name
    path = os.path.join(root, rel)
    if not os.path.isfile(path) or digest(path) != want:
        sys.exit(1)
for top, prefix in (('mmvfm', ''), ('configs', 'mmvfm/.mim/'),
                    ('tools', 'mmvfm/.mim/')):
    for base, dirs, files in os.walk(os.path.join(root, top)):
        dirs[:] = [d for d in dirs if d not in ('__pycache__', '.mim')]
        for fname in files:
            name = prefix + os.path.relpath(os.path.join(base, fname), root)
            if top == 'mmvfm' and not (fname.endswith('.py')
                                       or '/csrc/' in name):
                continue
            if not fname.endswith(('.pyc', '.pyo', '.so')) \
                    and name not in installed:
                sys.exit(1)
if 'mmvfm/.mim/model-index.yml' not in installed:
    sys.exit(1)
sys.exit(0)
EOF
then
    installed=1
else
    installed=0
fi
if [ "$EDITABLE" = 1 ]; then
    MODE=editable
    PIP_SRC=(-e .)
else
    MODE=regular
    PIP_SRC=(.)
fi
if [ "$installed" = 1 ] && ops_ok; then
    log "mmvfm already installed (${MODE}) from ${ROOT}: kept"
else
    log "installing mmvfm (${MODE}, MMVFM_WITH_OPS=${WITH_OPS}) from ${ROOT}"
    if ! MMVFM_WITH_OPS="$WITH_OPS" MAX_JOBS="${MAX_JOBS:-2}" \
        "${PIP[@]}" install -q --no-deps --no-build-isolation "${PIP_SRC[@]}"; then
        [ "$WITH_OPS" = 1 ] || exit 1
        log "building mmvfm's ops failed: installing without them (PyTorch reference)"
        MMVFM_WITH_OPS=0 "${PIP[@]}" install -q --no-deps --no-build-isolation "${PIP_SRC[@]}"
    fi
fi

# 7. Check: versions, stack fixes, registries.
"$PY" - <<'EOF'
import os, sys
sys.path.pop(0)
import mmvfm
print('[install] mmvfm imported from', os.path.dirname(mmvfm.__file__))
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
