# Copyright (c) mmvfm contributors. All rights reserved.
"""A ``CheckpointHook`` that never leaves the work dir without a complete
checkpoint to resume from."""

import os
import os.path as osp
import re
import shutil

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

# ``.<name>.tmp-<pid>``: hidden, and never ending in ``.pth``
_TMP_RE = re.compile(r'^\..+\.tmp-\d+$')


def tmp_name(filename: str) -> str:
    """The hidden temporary name ``filename`` is written under.

    Args:
        filename (str): The final file name (no folder).

    Returns:
        str: ``.<filename>.tmp-<pid>``.
    """
    return f'.{filename}.tmp-{os.getpid()}'


def is_tmp_name(filename: str) -> bool:
    """Whether ``filename`` (no folder) is a name of :func:`tmp_name`."""
    return _TMP_RE.match(filename) is not None


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` survive a power cut (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def replace_atomically(tmp_path: str, path: str) -> None:
    """Flush ``tmp_path`` to disk and rename it onto ``path``.

    Args:
        tmp_path (str): A completely written file (or a folder: DeepSpeed
            checkpoints are folders) in the folder of ``path``.
        path (str): Where it goes; replaced if it exists. A file is
            replaced atomically; a folder is removed first (a rename cannot
            replace a non-empty folder).
    """
    if osp.isdir(tmp_path):
        if osp.isdir(path):
            shutil.rmtree(path)
    else:
        with open(tmp_path, 'rb+') as f:
            os.fsync(f.fileno())
    os.replace(tmp_path, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path``, which holds its old text or ``text`` at
    every moment, never a part.

    Args:
        path (str): The file to write.
        text (str): Its new content.
    """
    tmp = osp.join(osp.dirname(path), tmp_name(osp.basename(path)))
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
    replace_atomically(tmp, path)


def _remove(path: str) -> None:
    if osp.isfile(path):
        os.remove(path)
    elif osp.isdir(path):
        shutil.rmtree(path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` whose saves never leave a moment
    without a complete checkpoint and a ``last_checkpoint`` naming it.

    Why: mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint
    *before* it saves the new one (once ``max_keep_ckpts`` are kept),
    ``LocalBackend.put`` writes the ``.pth`` in place, and the work dir's
    ``last_checkpoint`` is rewritten in place too. With
    ``max_keep_ckpts=1`` no complete checkpoint exists while one is
    written: a run killed then (pre-emption, the OOM killer, a SIGKILL)
    leaves a truncated ``.pth``, an empty ``last_checkpoint`` or one that
    names a deleted file, and nothing to resume from. mmengine has no
    setting for this.

    What differs, on a local ``out_dir``, for the periodic and last
    checkpoints (``_save_checkpoint_with_step``, the only method replaced):

    1. the checkpoint is written by ``Runner.save_checkpoint`` under a
       hidden temporary name in the same folder (``.iter_8.pth.tmp-<pid>``),
       then fsync-ed and ``os.replace``-d onto its name (atomic);
    2. ``last_checkpoint`` is written to a temporary file and replaced the
       same way;
    3. only then are checkpoints beyond ``max_keep_ckpts`` deleted.

    Temporary files left by a killed write (in ``out_dir`` and the work
    dir) are removed in ``before_train`` and before each save; their names
    never end in ``.pth`` and ``last_checkpoint`` never names them, so
    nothing resumes from them. A write that raises removes its temporary
    file.

    4. an evaluation whose metrics lack a ``save_best`` key (a detector
       that predicts no box yet, e.g. after a few iterations, makes
       ``CocoMetric`` return no ``bbox_mAP``) logs a warning naming the key
       and the metrics it got, and leaves the best checkpoint as it is;
       ``CheckpointHook`` raises ``KeyError`` there and ends the run.

    Everything else is ``CheckpointHook``'s: the arguments, file names,
    ``keep_ckpt_ids`` / ``last_ckpt`` in the message hub, publishing and the
    best-checkpoint logic (a best checkpoint, not needed to resume, is
    still written in place after the previous best is removed). In
    distributed runs every rank calls ``Runner.save_checkpoint`` as before
    (rank 0 writes; wrappers such as ``FSDP2StateDictHook`` gather on all
    ranks); only rank 0 renames, writes ``last_checkpoint`` and deletes.

    NOTE: on a non-local ``out_dir`` (``backend_args`` or
    ``file_client_args`` naming s3, petrel, http, ...) there is no atomic
    rename; the hook falls back to ``CheckpointHook``'s behaviour, window
    included.

    Args:
        **kwargs: exactly those of mmengine's ``CheckpointHook``
            (``interval``, ``by_epoch``, ``max_keep_ckpts``, ``save_last``,
            ``save_best``, ``out_dir``, ``backend_args``, ...).

    Examples:
        In a stock mmdet config::

            custom_imports = dict(imports=['mmvfm'],
                                  allow_failed_imports=False)
            default_hooks = dict(
                checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                                max_keep_ckpts=1))
    """

    def _is_local(self) -> bool:
        """Whether checkpoints go to the local disk (``file_backend`` is set
        by ``before_train``; a ``FileClient`` holds its backend in
        ``client``)."""
        backend = getattr(self.file_backend, 'client', self.file_backend)
        return isinstance(backend, LocalBackend)

    def _remove_stray_tmp_files(self, runner) -> None:
        """Remove the temporary files of killed writes (rank 0 only).

        Args:
            runner (Runner): The runner of the training process.
        """
        if not (self._is_local() and is_main_process()):
            return
        for folder in {self.out_dir, runner.work_dir}:
            if not osp.isdir(folder):
                continue
            for name in os.listdir(folder):
                if is_tmp_name(name):
                    _remove(osp.join(folder, name))

    def before_train(self, runner) -> None:
        """``CheckpointHook.before_train``, then remove stray temporary
        files.

        Args:
            runner (Runner): The runner of the training process.
        """
        super().before_train(runner)
        self._remove_stray_tmp_files(runner)

    def _push_step(self, runner, step: int):
        """Record ``step`` in ``keep_ckpt_ids`` (as ``CheckpointHook`` does,
        before the save, so that the checkpoint holds the new list) and
        return the step it pushes out, whose file is deleted after the save.

        Args:
            runner (Runner): The runner of the training process.
            step (int): The epoch or iteration being saved.

        Returns:
            int, optional: The dropped step, None if none.
        """
        if self.max_keep_ckpts <= 0:
            return None
        ids = self.keep_ckpt_ids
        # _save_checkpoint and _save_best_checkpoint may save one step twice
        if len(ids) > 0 and ids[-1] == step:
            return None
        dropped = ids.popleft() if len(ids) == self.max_keep_ckpts else None
        ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(ids))
        return dropped

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """``CheckpointHook._save_best_checkpoint``, with a warning instead
        of ``KeyError`` for a ``save_best`` key the metrics lack.

        Args:
            runner (Runner): The runner of the training process.
            metrics (dict): Evaluation results of all metrics.
        """
        keys = getattr(self, 'key_indicators', [])
        missing = [k for k in keys if k != 'auto' and k not in metrics]
        if missing:
            runner.logger.warning(
                f'save_best: {", ".join(map(repr, missing))} not in this '
                f"evaluation's metrics ({', '.join(metrics) or 'none'}); "
                'the best checkpoint is not updated for '
                f'{"this key" if len(missing) == 1 else "these keys"}. A '
                'detector that predicts no box yet gives no bbox metrics; '
                "otherwise check the key's spelling."
            )
            # CheckpointHook skips a key whose score is None
            metrics = {**metrics, **dict.fromkeys(missing)}
        super()._save_best_checkpoint(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save checkpoint ``step`` atomically, then drop old ones.

        Args:
            runner (Runner): The runner of the training process.
            step (int): The epoch or iteration in the file name.
            meta (dict): The checkpoint's meta information.
        """
        if not self._is_local():  # no atomic rename on a remote backend
            return super()._save_checkpoint_with_step(runner, step, meta)
        self._remove_stray_tmp_files(runner)
        dropped = self._push_step(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        # NOTE: mmengine deletes the oldest checkpoint first and writes the
        # new one in place; here the new one is in place before anything
        # is removed. Every rank calls save_checkpoint; rank 0 writes.
        tmp_path = osp.join(self.out_dir, tmp_name(ckpt_filename))
        try:
            runner.save_checkpoint(
                self.out_dir,
                osp.basename(tmp_path),
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args,
            )
            if not is_main_process():
                return
            replace_atomically(tmp_path, self.last_ckpt)
        except BaseException:
            if is_main_process():
                _remove(tmp_path)
            raise
        write_text_atomically(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt
        )
        if dropped is not None:
            old = osp.join(self.out_dir, self.filename_tmpl.format(dropped))
            if osp.abspath(old) != osp.abspath(self.last_ckpt):
                _remove(old)
