# Copyright (c) mmvfm contributors. All rights reserved.
from .resumable_infinite_sampler import ResumableInfiniteSampler

__all__ = ['ResumableInfiniteSampler']
