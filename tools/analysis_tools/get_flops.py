# Copyright (c) mmvfm contributors. All rights reserved.
"""FLOPs and parameters of a config's model, on images of its val set.

    python tools/analysis_tools/get_flops.py CONFIG [--num-images 100] \
        [--cfg-options ...]

mmdet's ``get_flops.py`` (mmengine's ``get_model_complexity_info``, the
mean over ``--num-images`` val images, which may differ in padded size),
after ``import mmvfm`` (stack fixes, registries), and for ``mmdet::`` config
paths too.
"""

import contextlib
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from analyze_results import load_mmdet_tool  # noqa: E402  (imports mmvfm)

from mmvfm.utils import resolve_config_path  # noqa: E402


@contextlib.contextmanager
def command_line(prog: str, argv: list):
    """``sys.argv`` set to ``[prog, *argv]`` (mmdet's tools parse it)."""
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        yield
    finally:
        sys.argv = saved


def main(argv=None):
    tool = load_mmdet_tool('get_flops.py')
    argv = list(sys.argv[1:] if argv is None else argv)
    with command_line(tool.__file__, argv):
        args = tool.parse_args()
    try:
        resolved = resolve_config_path(args.config)
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    argv[argv.index(args.config)] = resolved
    with command_line(tool.__file__, argv):
        tool.main()


if __name__ == '__main__':
    main()
