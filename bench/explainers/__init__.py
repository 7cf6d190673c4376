"""Explainers: lazily registered so that listing them imports only what is asked for."""

from bench.registry import EXPLAINERS

_BUILTIN = {
    # gradient family (captum)
    "saliency": "gradient:Saliency",
    "input_x_gradient": "gradient:InputXGradient",
    "integrated_gradients": "gradient:IntegratedGradients",
    "guided_backprop": "gradient:GuidedBackprop",
    "guided_gradcam": "gradient:GuidedGradCAM",
    "deeplift": "gradient:DeepLift",
    "smoothgrad": "smoothgrad:SmoothGrad",
    "deeplift_shap": "shap:DeepLiftShap",
    "gradient_shap": "shap:GradientShap",
    # perturbation family
    "occlusion": "perturbation:Occlusion",
    "lime": "perturbation:Lime",
    "kernel_shap": "perturbation:KernelShap",
    "rise": "rise:RISE",
    # CAM family (native, batched)
    "gradcam": "cam:GradCAM",
    "gradcam_pp": "cam:GradCAMPlusPlus",
    "scorecam": "cam:ScoreCAM",
    "xgradcam": "cam:XGradCAM",
    "layercam": "cam:LayerCAM",
    "eigencam": "cam:EigenCAM",
    "hirescam": "cam:HiResCAM",
    "ablationcam": "cam:AblationCAM",
    # relevance propagation
    "lrp": "lrp:LRP",
    # vision transformers
    "attention_rollout": "transformer:AttentionRollout",
    "transformer_attribution": "transformer:TransformerAttribution",
    # controls: explainers that ignore the model
    "random": "controls:RandomAttribution",
    "gaussian_blob": "controls:GaussianBlob",
    "sobel": "controls:SobelEdges",
}

for _name, _target in _BUILTIN.items():
    EXPLAINERS.register_lazy(_name, f"bench.explainers.{_target}")
