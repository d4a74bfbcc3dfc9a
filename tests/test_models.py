import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.models.attention_processor import Attention

from diffusion_lab.models import (
    CIFAR10_UNET,
    FGVC_AIRCRAFT_UNET,
    MNIST_UNET,
    CourseworkCNN,
    build_model,
)


def conv_params(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def linear_params(n_in, n_out):
    return n_in * n_out + n_out


def test_coursework_cnn_parameter_count_matches_the_layer_spec():
    convs = conv_params(1, 16, 7) + conv_params(16, 32, 7) + conv_params(32, 32, 7) + conv_params(32, 16, 7) + conv_params(16, 1, 3)
    layer_norms = 4 * 2 * 28 * 28  # weight and bias over (H, W) after each hidden conv
    time_mlp = linear_params(32, 128) + 2 * linear_params(128, 128) + linear_params(128, 16)
    assert convs + layer_norms + time_mlp == 146_961
    assert sum(p.numel() for p in CourseworkCNN().parameters()) == 146_961


def test_report_cnn_is_the_encoder_decoder_reports_form_with_its_parameter_count_by_hand():
    """The report: time MLP 32 -> 128 -> 128 -> 16 (two hidden layers), GELU; no normalisation is described."""
    convs = conv_params(1, 16, 7) + conv_params(16, 32, 7) + conv_params(32, 32, 7) + conv_params(32, 16, 7) + conv_params(16, 1, 3)
    assert convs == 800 + 25_120 + 50_208 + 25_104 + 145 == 101_377
    time_mlp = linear_params(32, 128) + linear_params(128, 128) + linear_params(128, 16)
    assert time_mlp == 4_224 + 16_512 + 2_064 == 22_800
    model = build_model("cnn_report", 28, 1, 1000)
    assert sum(p.numel() for p in model.parameters()) == convs + time_mlp == 124_177
    linears = [layer for layer in model.time_mlp if isinstance(layer, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(32, 128), (128, 128), (128, 16)]
    assert [type(layer).__name__ for layer in model.time_mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert not any(isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)) for module in model.modules())
    # Without the LayerNorms each block is conv -> GELU, exactly.
    hidden = torch.randn(2, 16, 28, 28)
    torch.testing.assert_close(model.blocks[1](hidden), torch.nn.functional.gelu(model.blocks[1].conv(hidden)))
    assert model(torch.randn(2, 1, 28, 28), torch.tensor([3, 700])).sample.shape == (2, 1, 28, 28)


def test_both_cnn_forms_round_trip_through_their_config(tmp_path):
    for name, hidden_layers, norm in (("cnn", 3, "layer_norm"), ("cnn_report", 2, "none")):
        torch.manual_seed(0)
        model = build_model(name, 28, 1, 300)
        model.save_pretrained(tmp_path / name)
        loaded = CourseworkCNN.from_pretrained(tmp_path / name)
        assert (loaded.config.time_mlp_hidden_layers, loaded.config.norm) == (hidden_layers, norm)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="norm 'batch'"):
        CourseworkCNN(norm="batch")


def test_dropout_reaches_every_resnet_of_a_unet_preset_and_is_refused_for_the_cnns():
    model = build_model("unet", 28, 1, 300, dropout=0.01)
    assert model.config.dropout == 0.01
    dropouts = [module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    assert dropouts and set(dropouts) - {0.0} == {0.01}  # attention's own dropout stays 0
    assert build_model("unet", 28, 1, 300).config.dropout == 0.0
    assert build_model("unet_cifar10", 32, 3, 1000, dropout=0.0).config.dropout == 0.0  # replaces the preset's 0.1
    with pytest.raises(ValueError, match="--dropout applies to UNet2DModel presets"):
        build_model("cnn", 28, 1, 300, dropout=0.01)


def test_fgvc_aircraft_preset_is_64x64_rgb():
    assert (FGVC_AIRCRAFT_UNET["sample_size"], FGVC_AIRCRAFT_UNET["in_channels"]) == (64, 3)
    model = build_model("unet_fgvc_aircraft", 64, 3, 500, dropout=0.01)
    assert sum(p.numel() for p in model.parameters()) == 25_304_963
    assert model.config.dropout == 0.01 and tuple(model.config.block_out_channels) == (64, 128, 256, 256)


def test_the_small_unet_halves_the_fast_unets_two_large_levels():
    small, fast = build_model("unet_small", 28, 1, 1000), build_model("unet_fast", 28, 1, 1000)
    assert tuple(small.config.block_out_channels) == (16, 32, 64) and tuple(fast.config.block_out_channels) == (32, 64, 64)
    assert small.config.layers_per_block == fast.config.layers_per_block == 1
    assert sum(p.numel() for p in small.parameters()) == 619_697
    assert not any("Attn" in name for name in (*small.config.down_block_types, *small.config.up_block_types))
    # No attention in the middle block either (unet_fast keeps its one there).
    assert not small.config.add_attention and fast.config.add_attention
    assert not any(isinstance(module, Attention) for module in small.modules())
    assert any(isinstance(module, Attention) for module in fast.modules())


def test_coursework_cnn_layers_and_time_features():
    model = CourseworkCNN()
    assert [b.conv.kernel_size for b in model.blocks] == [(7, 7)] * 4 and model.conv_out.kernel_size == (3, 3)
    assert [b.conv.out_channels for b in model.blocks] == [16, 32, 32, 16]
    assert model.blocks[0].norm.normalized_shape == (28, 28)
    features = model.time_features(torch.tensor([0, 500]))
    assert features.shape == (2, 32)
    assert torch.equal(features[0], torch.zeros(32))  # sin 0 = 0 and cos 0 - 1 = 0
    expected = torch.sin(torch.tensor(0.5 * 2 * torch.pi * 1.5**3))
    torch.testing.assert_close(features[1, 4], expected)  # frequency index 4 = 2*pi*1.5^3


def test_more_capacity_variant_and_output_object():
    model = build_model("cnn_large", 28, 1, 1000)
    assert model.config.hidden_channels == (64, 128, 256, 128, 64)
    out = model(torch.randn(3, 1, 28, 28), torch.tensor([1, 2, 3]))
    assert out.sample.shape == (3, 1, 28, 28)


def test_unet_presets_run_at_their_resolution():
    mnist = UNet2DModel(**MNIST_UNET)
    assert mnist(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])).sample.shape == (2, 1, 28, 28)
    cifar = UNet2DModel(**CIFAR10_UNET)
    assert abs(sum(p.numel() for p in cifar.parameters()) - 35.7e6) < 0.1e6  # Ho et al.'s 35.7 M
    assert cifar.config.dropout == 0.1 and tuple(cifar.config.block_out_channels) == (128, 256, 256, 256)


def test_cnn_save_load_round_trip_is_exact_and_drops_into_ddpm_pipeline(tmp_path):
    torch.manual_seed(0)
    model = CourseworkCNN()
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = CourseworkCNN.from_pretrained(tmp_path / "unet")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    pipeline = DDPMPipeline(unet=loaded, scheduler=DDPMScheduler(num_train_timesteps=1000))
    images = pipeline(batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 28, 28, 1)
