"""Models: lazily registered sources of classifiers."""

from bench.registry import MODELS

MODELS.register_lazy("small_cnn", "bench.models.small_cnn:SmallCNN")
# torchvision architectures of the studies, registered under their own names (``bench.models.zoo`` builds them)
STUDY_ARCHS = (
    "resnet34",
    "resnet50",
    "resnet101",
    "vgg13",
    "vgg16",
    "alexnet",
    "densenet161",
    "squeezenet1_1",
    "vit_b_16",
)

MODELS.register_lazy("torchvision", "bench.models.zoo:TorchvisionModel")
for _arch in STUDY_ARCHS:
    MODELS.register_lazy(_arch, f"bench.models.zoo:Torchvision_{_arch}")
MODELS.register_lazy("cifar_resnet", "bench.models.cifar_resnet:CifarResNetSource")
MODELS.register_lazy("vgg13_cifar", "bench.models.vgg_cifar:VGG13Cifar")
MODELS.register_lazy("efficientnet_lite0", "bench.models.efficientnet:EfficientNetLite0")
MODELS.register_lazy("efficientnet_lite1", "bench.models.efficientnet:EfficientNetLite1")
MODELS.register_lazy("efficientnet_lite2", "bench.models.efficientnet:EfficientNetLite2")
MODELS.register_lazy("timm", "bench.models.timm_models:TimmModel")
MODELS.register_lazy("vit_tiny", "bench.models.vit_tiny:ViTTiny")
