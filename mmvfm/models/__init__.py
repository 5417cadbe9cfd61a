# Copyright (c) mmvfm contributors. All rights reserved.
# Algorithms (FGD, GQPos, SiA, ...) register their modules here.
