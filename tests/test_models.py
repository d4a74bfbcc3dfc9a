import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from diffusion_lab.models import CIFAR10_UNET, MNIST_UNET, CourseworkCNN, build_model


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
