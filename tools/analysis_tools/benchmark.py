# Copyright (c) mmvfm contributors. All rights reserved.
"""Inference speed (images per second) of a config's model on a CPU or a
GPU, or the speed of its dataloader or dataset pipeline.

    python tools/analysis_tools/benchmark.py CONFIG [--checkpoint CKPT] \
        [--device cpu|cuda|cuda:1] [--max-iter 2000] [--num-warmup 5] \
        [--task inference|dataloader|dataset] [--work-dir DIR]

``--task inference`` (the default; mmdet's is ``dataloader``) runs the
model on the test set one image at a time, ``--num-warmup`` images
untimed, and prints the images per second every ``--log-interval`` images
and at the end, with the memory in use. ``--device`` defaults to ``cuda``
where CUDA is available, else ``cpu``.

mmdet's ``mmdet.utils.benchmark``: its ``DataLoaderBenchmark`` and
``DatasetBenchmark`` as they are; its ``InferenceBenchmark`` with the
model on ``--device`` (mmdet's moves it to CUDA and synchronises CUDA
unconditionally). A test set shorter than ``--max-iter`` is timed to its
end (mmdet's then reports 0 fps unless its length is a multiple of
``--log-interval``).
"""

import argparse
import os
import os.path as osp
import sys
import time
import warnings

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from analyze_results import load_test_config  # noqa: E402  (imports mmvfm)
from mmdet.utils import benchmark as mmdet_benchmark  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from mmvfm.fileio import CheckpointError  # noqa: E402

print_log = mmdet_benchmark.print_log


class InferenceBenchmark(mmdet_benchmark.InferenceBenchmark):
    """mmdet's ``InferenceBenchmark`` on ``device``, without a checkpoint
    (the model as initialised) too."""

    def __init__(
        self,
        cfg,
        checkpoint,
        device,
        is_fuse_conv_bn=False,
        max_iter=2000,
        log_interval=50,
        num_warmup=5,
        logger=None,
    ):
        self.device = torch.device(device)
        super().__init__(
            cfg,
            checkpoint,
            False,  # not distributed: mmdet times one process
            is_fuse_conv_bn,
            max_iter,
            log_interval,
            num_warmup,
            logger=logger,
        )

    def _init_model(self, checkpoint, is_fuse_conv_bn):
        from mmcv.cnn import fuse_conv_bn
        from mmdet.registry import MODELS
        from mmengine.runner import load_checkpoint

        model = MODELS.build(self.cfg.model)
        if checkpoint is not None:  # weights-only, through mmvfm.fileio
            load_checkpoint(model, checkpoint, map_location='cpu')
        if is_fuse_conv_bn:
            model = fuse_conv_bn(model)
        return model.to(self.device).eval()

    def _synchronize(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def _memory(self) -> str:
        if self.device.type != 'cuda':
            return ''
        from mmengine.device import get_max_cuda_memory

        return f', cuda memory: {get_max_cuda_memory(self.device)} MB'

    def run_once(self) -> dict:
        """Time the model on the first ``max_iter`` test images."""
        timed, pure_inf_time = 0, 0.0
        total = min(self.max_iter, len(self.data_loader))
        for i, data in enumerate(self.data_loader):
            self._synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                self.model.test_step(data)
            self._synchronize()
            elapsed = time.perf_counter() - start
            if i >= self.num_warmup:
                timed += 1
                pure_inf_time += elapsed
                if (i + 1) % self.log_interval == 0 and i + 1 < total:
                    fps = timed / pure_inf_time
                    print_log(
                        f'Done image [{i + 1:<3}/{total}], '
                        f'fps: {fps:.2f} img/s, '
                        f'times per image: {1000 / fps:.1f} ms/img'
                        f'{self._memory()}',
                        self.logger,
                    )
                    mmdet_benchmark.print_process_memory(
                        self._process, self.logger
                    )
            if i + 1 == total:
                break
        fps = timed / pure_inf_time
        print_log(
            f'Done image [{total}/{total}], fps: {fps:.2f} img/s, '
            f'times per image: {1000 / fps:.1f} ms/img',
            self.logger,
        )
        return {'fps': fps}

    def average_multiple_runs(self, results: list) -> dict:
        fps_list = [result['fps'] for result in results]
        avg_fps = sum(fps_list) / len(fps_list)
        print_log('============== Done ==================', self.logger)
        runs = (
            f' (runs: {", ".join(f"{f:.2f}" for f in fps_list)})'
            if len(fps_list) > 1
            else ''
        )
        print_log(
            f'Overall fps: {avg_fps:.2f} img/s, times per image: '
            f'{1000 / avg_fps:.1f} ms/img on {self.device}{runs}'
            f'{self._memory()}',
            self.logger,
        )
        mmdet_benchmark.print_process_memory(self._process, self.logger)
        return {
            'avg_fps': avg_fps,
            'fps_list': fps_list,
            'device': str(self.device),
        }


def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Inference / dataloader / dataset speed'
    )
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        '--checkpoint',
        help='checkpoint file (default: the model as initialised; a '
        "trained model's post-processing may keep more or fewer boxes)",
    )
    parser.add_argument(
        '--task',
        choices=['inference', 'dataloader', 'dataset'],
        default='inference',
        help='what to time (default: inference)',
    )
    parser.add_argument(
        '--device',
        default=None,
        help='inference device, e.g. cpu, cuda, cuda:1 (default: cuda '
        'where available, else cpu)',
    )
    parser.add_argument(
        '--repeat-num',
        type=int,
        default=1,
        help='measure this many times and average',
    )
    parser.add_argument(
        '--max-iter',
        type=int,
        default=2000,
        help='time at most this many images (batches for dataloader)',
    )
    parser.add_argument(
        '--log-interval', type=int, default=50, help='interval of logging'
    )
    parser.add_argument(
        '--num-warmup',
        type=int,
        default=5,
        help='untimed iterations first',
    )
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='fuse conv and bn (slightly faster inference)',
    )
    parser.add_argument(
        '--dataset-type',
        choices=['train', 'val', 'test'],
        default='test',
        help='the dataloader of --task dataloader / dataset',
    )
    parser.add_argument(
        '--work-dir', help='also write the log to WORK_DIR/benchmark.log'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings',
    )
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = default_device()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available')
    for name in ('repeat_num', 'max_iter', 'log_interval'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    if args.num_warmup < 0:
        parser.error('--num-warmup must be at least 0')
    return args


def build_benchmark(args, cfg, logger):
    """mmdet's benchmark of ``args.task`` (ours for inference), timing at
    most the whole set."""
    common = (args.max_iter, args.log_interval, args.num_warmup)
    if args.task == 'inference':
        if args.checkpoint is None:
            warnings.warn(
                'no --checkpoint: timing the model as initialised',
                stacklevel=2,
            )
        elif not osp.isfile(args.checkpoint):
            raise SystemExit(
                f'error: checkpoint "{args.checkpoint}" does not exist'
            )
        bench = InferenceBenchmark(
            cfg,
            args.checkpoint,
            args.device,
            args.fuse_conv_bn,
            *common,
            logger=logger,
        )
        length = len(bench.data_loader)
        what = 'test images'
    elif args.task == 'dataloader':
        bench = mmdet_benchmark.DataLoaderBenchmark(
            cfg, False, args.dataset_type, *common, logger=logger
        )
        length = len(bench.data_loader)
        what = f'{args.dataset_type} batches'
    else:
        bench = mmdet_benchmark.DatasetBenchmark(
            cfg, args.dataset_type, *common, logger=logger
        )
        length = len(bench.dataset)
        what = f'{args.dataset_type} images'
    bench.max_iter = min(bench.max_iter, length)
    if bench.max_iter <= bench.num_warmup:
        raise SystemExit(
            f'error: {bench.max_iter} {what} to time and --num-warmup '
            f'{bench.num_warmup}: nothing left to time (lower --num-warmup)'
        )
    return bench


def main(argv=None):
    """Returns ``{'avg_fps', 'fps_list'}`` (and ``'device'`` for
    inference)."""
    from mmengine.logging import MMLogger

    args = parse_args(argv)
    loader = (
        'test_dataloader'
        if args.task == 'inference'
        else f'{args.dataset_type}_dataloader'
    )
    cfg = load_test_config(args.config, args.cfg_options, loader)
    logger = None  # print
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
        logger = MMLogger.get_instance(
            f'benchmark_{time.strftime("%Y%m%d_%H%M%S")}',
            log_file=osp.join(args.work_dir, 'benchmark.log'),
            log_level='INFO',
        )
    try:
        bench = build_benchmark(args, cfg, logger)
    except (CheckpointError, FileNotFoundError) as e:
        raise SystemExit(f'error: {e}') from None
    return bench.run(args.repeat_num)


if __name__ == '__main__':
    main()
