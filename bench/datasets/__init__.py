"""Datasets: lazily registered so that listing them imports nothing heavy."""

from bench.registry import DATASETS

DATASETS.register_lazy("synthetic", "bench.datasets.synthetic:Synthetic")
DATASETS.register_lazy("imagefolder", "bench.datasets.imagefolder:ImageFolder")
DATASETS.register_lazy("imagelist", "bench.datasets.imagelist:ImageList")
DATASETS.register_lazy("cifar10", "bench.datasets.cifar10:CIFAR10")
DATASETS.register_lazy("voc2012", "bench.datasets.voc:VOC2012")
DATASETS.register_lazy("coco", "bench.datasets.coco:COCO")
DATASETS.register_lazy("segfolder", "bench.datasets.segfolder:SegFolder")
