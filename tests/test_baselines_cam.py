"""Known answers for the batched CAM engine: Grad-CAM = CAM/(hw) on a GAP+linear head, every
library formula reproduced exactly per (image, class), Score-CAM/EigenCAM against the library,
and Wang et al. 2017's LSE pooling and CAM."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from baselines._cam_engine import (
    LIBRARY_CAMS,
    cam_maps,
    class_gradients,
    eigen_cam_maps,
    normalize_maps,
)
from baselines.cam import Wang2017Net, lse_pool

LIB_CLASSES = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "hirescam": HiResCAM,
               "layercam": LayerCAM}


class StridelessNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> GAP -> linear; the CAM layer has the input's size, so the
    grad-cam library's maps need no resizing and compare exactly with ours."""

    def __init__(self, k: int = 6, n: int = 14):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, k, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(k, n)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=14).eval()


def test_gradcam_equals_cam_up_to_scale_on_gap_linear_head(resnet):
    """Known answer: with A -> GAP -> linear, d y_c / d A_k(i,j) = W_ck / hw, so Grad-CAM = CAM / hw."""
    torch.manual_seed(1)
    x = torch.rand(3, 1, 64, 64)
    classes = [0, 3, 7, 13]
    grad_cam = cam_maps("gradcam", resnet, resnet.layer4, x, classes)
    with torch.no_grad():
        acts = _layer4_out(resnet, x)
        cam = torch.einsum("ck,bkhw->bchw", resnet.fc.weight[classes], acts)
    h, w = acts.shape[-2:]
    assert grad_cam.shape == (3, 4, h, w)
    torch.testing.assert_close(grad_cam, cam / (h * w), rtol=1e-4, atol=1e-6)
    # and after the shared normalisation the two are the same heatmap
    torch.testing.assert_close(normalize_maps(grad_cam), normalize_maps(cam), rtol=1e-4, atol=1e-5)


def _layer4_out(model, x):
    y = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(y))))


def test_class_gradients_match_one_backward_per_class(resnet):
    torch.manual_seed(2)
    leaf = torch.rand(2, 512, 2, 2, requires_grad=True)
    logits = resnet.forward_head(leaf)
    got = class_gradients(logits, leaf, [1, 5])
    for j, c in enumerate([1, 5]):
        (ref,) = torch.autograd.grad(logits[:, c].sum(), leaf, retain_graph=True)
        torch.testing.assert_close(got[j], ref)


@pytest.mark.parametrize("name", sorted(LIBRARY_CAMS))
def test_batched_maps_equal_library_per_image_and_class(name):
    torch.manual_seed(3)
    net = StridelessNet().eval()
    x = torch.rand(3, 1, 12, 12)
    classes = [2, 0, 9]
    ours = normalize_maps(cam_maps(name, net, net.body[-1], x, classes))
    with LIB_CLASSES[name](model=net, target_layers=[net.body[-1]]) as lib:
        for b in range(3):
            for j, c in enumerate(classes):
                ref = lib(input_tensor=x[b : b + 1], targets=[ClassifierOutputTarget(c)])[0]
                np.testing.assert_allclose(ours[b, j].numpy(), ref, rtol=1e-4, atol=1e-5)


def test_scorecam_equals_library_with_all_channels():
    torch.manual_seed(4)
    net = StridelessNet(k=5).eval()
    x = torch.rand(2, 1, 10, 10)
    classes = [1, 4]
    ours = normalize_maps(cam_maps("scorecam", net, net.body[-1], x, classes, score_cam_channels=None))
    with ScoreCAM(model=net, target_layers=[net.body[-1]]) as lib:
        for b in range(2):
            for j, c in enumerate(classes):
                ref = lib(input_tensor=x[b : b + 1], targets=[ClassifierOutputTarget(c)])[0]
                np.testing.assert_allclose(ours[b, j].numpy(), ref, rtol=1e-3, atol=1e-4)


def test_scorecam_channel_subset_keeps_shape_and_differs_from_full():
    torch.manual_seed(5)
    net = StridelessNet(k=6).eval()
    x = torch.rand(2, 1, 8, 8)
    sub = cam_maps("scorecam", net, net.body[-1], x, [0, 1], score_cam_channels=2)
    full = cam_maps("scorecam", net, net.body[-1], x, [0, 1], score_cam_channels=None)
    assert sub.shape == full.shape == (2, 2, 8, 8)
    assert not torch.allclose(sub, full)


def test_eigencam_is_library_projection_up_to_sign_and_class_agnostic():
    torch.manual_seed(6)
    acts = torch.rand(3, 7, 5, 4)
    ours = eigen_cam_maps(acts)[:, 0].numpy()
    ref = get_2d_projection(acts.numpy())
    for o, r in zip(ours, ref):
        s = np.sign((o * r).sum())
        np.testing.assert_allclose(o, s * r, rtol=1e-4, atol=1e-5)
        # our orientation: positively correlated with the channel-mean activation
    mean = acts.mean(1)
    for b in range(3):
        m = mean[b] - mean[b].mean()
        assert float((torch.from_numpy(ours[b]) * m).sum()) >= 0
    net = StridelessNet().eval()
    maps = cam_maps("eigencam", net, net.body[-1], torch.rand(2, 1, 6, 6), [0, 5, 7])
    torch.testing.assert_close(maps[:, 0], maps[:, 2])


def test_normalize_modes_and_errors():
    m = torch.tensor([[[[-1.0, 1.0], [2.0, 3.0]]]])
    torch.testing.assert_close(normalize_maps(m, "none"), torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))
    torch.testing.assert_close(normalize_maps(m, "max"), torch.tensor([[[[0.0, 1 / 3], [2 / 3, 1.0]]]]))
    torch.testing.assert_close(normalize_maps(m, "minmax"), torch.tensor([[[[0.0, 1 / 3], [2 / 3, 1.0]]]]))
    assert torch.equal(normalize_maps(torch.zeros(1, 1, 2, 2)), torch.zeros(1, 1, 2, 2))  # no NaN on flat maps
    with pytest.raises(ValueError, match="normalize"):
        normalize_maps(m, "zscore")
    with pytest.raises(ValueError, match="cam"):
        cam_maps("fullgrad", StridelessNet(), nn.Identity(), torch.rand(1, 1, 4, 4), [0])


def test_lse_pool_interpolates_between_mean_and_max():
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(lse_pool(x, 1e-4), x.mean((2, 3)), atol=1e-3, rtol=0)
    torch.testing.assert_close(lse_pool(x, 1e4), x.amax((2, 3)), atol=1e-3, rtol=0)
    r10 = lse_pool(x, 10.0)
    assert torch.all(r10 <= x.amax((2, 3)) + 1e-6) and torch.all(r10 >= x.mean((2, 3)) - 1e-6)
    # exact formula of Wang et al. 2017, eq. 1
    ref = torch.log(torch.exp(10 * x).mean((2, 3))) / 10
    torch.testing.assert_close(r10, ref, rtol=1e-5, atol=1e-5)


def test_wang2017_cam_is_prediction_weights_on_transition_maps():
    torch.manual_seed(8)
    net = Wang2017Net("resnet18", transition_dim=16, lse_r=10.0).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        feats = net.features(x)
        cam = net.cam(x, [0, 6])
        logits = net(x)
    assert feats.shape == (2, 16, 2, 2) and logits.shape == (2, 14)
    torch.testing.assert_close(cam[:, 1], torch.einsum("d,bdhw->bhw", net.fc.weight[6], feats))
    # the logit is the LSE-pooled transition map fed to the same weights
    torch.testing.assert_close(logits, net.fc(lse_pool(feats, 10.0)))


def test_atrous_explain_net_is_the_trained_net_evaluated_densely():
    """explain_output_stride=16 reuses the trained weights with a dilated last stage (DeepLab's
    a-trous trick): every other position of its feature map is exactly the trained map."""
    from baselines.cam import CNNCAM

    torch.manual_seed(9)
    m = CNNCAM({"arch": "resnet18", "explain_output_stride": 16})
    m.image_size = 64
    net = m.ensure_net().eval()
    dense = m.explain_net()
    assert dense is not net and m.explain_net() is dense  # built once, cached
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        coarse = _layer4_out(net.model, (x - net.mean) / net.std)
        fine = _layer4_out(dense.model, (x - dense.mean) / dense.std)
    assert coarse.shape[-1] == 2 and fine.shape[-1] == 4
    torch.testing.assert_close(fine[..., ::2, ::2], coarse, rtol=1e-4, atol=1e-5)
    assert m.explain(x, [0, 1]).shape == (2, 2, 4, 4)
