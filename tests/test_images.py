"""Your own images: Fashion-MNIST, arrays and image folders, convolutional networks, the 8-bit
likelihood, streaming from disk, and image sampling and latent figures (issue 13)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_lvm.cli import main
from pyro_lvm.data import ChecksumError, load_dataset
from pyro_lvm.data.images import StreamedRows, split_indices
from pyro_lvm.distributions import DiscretizedLogistic
from pyro_lvm.evaluation import evaluate
from pyro_lvm.models import VAE, VQVAE, BernVAE, CatVAE
from pyro_lvm.nn import ConvDecoder, ConvEncoder, grid_sizes
from pyro_lvm.objectives import ELBO
from pyro_lvm.train import TrainConfig, Trainer

LEVELS = torch.arange(256, dtype=torch.float64) / 255


# ------------------------------------------------------------------ the likelihood
@pytest.mark.parametrize("loc,scale", [(0.3, 0.05), (0.0, 0.01), (1.0, 0.2), (-0.5, 0.1), (1.7, 0.3),
                                       (0.5, 1e-4), (0.42, 3.0)])
def test_discretized_logistic_is_a_probability_mass(loc, scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    p = d.log_prob(LEVELS).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (p >= 0).all()


def test_discretized_logistic_matches_the_logistic_cdf():
    """Each bin's mass is F(x + h) - F(x - h), the end bins take the tails (closed form)."""
    loc, scale, h = 0.4, 0.07, 0.5 / 255
    cdf = lambda t: 1 / (1 + math.exp(-(t - loc) / scale))  # noqa: E731
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    got = d.log_prob(LEVELS).exp()
    for k in (0, 1, 60, 102, 200, 254, 255):
        x = k / 255
        want = cdf(h) if k == 0 else 1 - cdf(1 - h) if k == 255 else cdf(x + h) - cdf(x - h)
        assert got[k].item() == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_discretized_logistic_samples_are_8_bit_and_follow_the_mass():
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(0.5), torch.tensor(0.05))
    x = d.sample((20000,))
    assert torch.allclose(x * 255, (x * 255).round()) and x.min() >= 0 and x.max() <= 1
    p = d.log_prob(LEVELS.float()).exp()
    assert x.mean().item() == pytest.approx((p * LEVELS.float()).sum().item(), abs=3e-3)


def test_bits_per_dim_is_the_nll_in_bits_per_value():
    torch.manual_seed(0)
    vae = VAE(input_dim=60, latent_dim=2, network="conv", channels=(3,), image_shape=(3, 4, 5),
              likelihood="discretized_logistic")
    x = torch.randint(0, 256, (10, 60)).float() / 255
    m = evaluate(vae, x, num_particles=4)
    assert m["test_bpd"] == pytest.approx(m["test_nll"] / (60 * math.log(2)))
    assert "test_bpd" not in evaluate(VAE(input_dim=6, latent_dim=2, hidden=(4,)), torch.ones(3, 6),
                                      num_particles=2)


def test_eight_bit_likelihood_refuses_other_values():
    vae = VAE(input_dim=4, latent_dim=2, hidden=(4,), likelihood="discretized_logistic")
    with pytest.raises(ValueError, match="8-bit values k/255"):
        vae.check_data(torch.full((2, 4), 0.1234))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        vae.check_data(torch.full((2, 4), 2.0))


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("shape,channels", [((1, 28, 28), (8, 16)), ((3, 13, 11), (4, 4)), ((2, 9, 16), (4, 8, 8)),
                                            ((1, 5, 5), (2,))])
def test_conv_networks_infer_their_sizes(shape, channels):
    d = int(np.prod(shape))
    enc = ConvEncoder(shape, channels, 6)
    dec = ConvDecoder(3, shape, channels, params=2)
    assert enc(torch.rand(4, d)).shape == (4, 6)
    assert dec(torch.randn(4, 3)).shape == (4, 2 * d)
    assert dec(torch.randn(5, 4, 3)).shape == (5, 4, 2 * d)  # extra batch dims (particles) pass through
    spatial = ConvEncoder(shape, channels, 2, spatial=True, residual_blocks=1)
    grid = grid_sizes(*shape[1:], len(channels))[-1]
    assert spatial(torch.rand(4, d)).shape == (4, 2) + grid
    back = ConvDecoder(2, shape, channels, spatial=True, residual_blocks=1)
    assert back(torch.randn(4, 2, *grid)).shape == (4, d)


def test_conv_networks_refuse_images_too_small():
    with pytest.raises(ValueError, match="too small for 3 strided convolutions"):
        ConvEncoder((1, 6, 6), (4, 4, 4), 2)


def test_conv_option_needs_an_image_shape_that_matches():
    with pytest.raises(ValueError, match="needs the image shape"):
        VAE(input_dim=784, network="conv")
    with pytest.raises(ValueError, match="holds 100 values, but input_dim is 784"):
        VAE(input_dim=784, network="conv", image_shape=(10, 10))
    with pytest.raises(ValueError, match="network must be one of"):
        BernVAE(input_dim=784, network="resnet")


def test_conv_vqvae_has_a_grid_of_codes():
    vq = VQVAE(input_dim=3 * 12 * 10, network="conv", image_shape=(3, 12, 10), channels=(4, 4), code_dim=2,
               codebook_size=8)
    assert vq.config.num_latents == 6  # 12x10 -> 6x5 -> 3x2
    x = torch.rand(5, 360)
    assert vq.codes(x).shape == (5, 6)
    assert vq.reconstruct(x).shape == (5, 360)
    with pytest.raises(ValueError, match="3x2 grid, so num_latents is 6"):
        VQVAE(input_dim=360, network="conv", image_shape=(3, 12, 10), channels=(4, 4), num_latents=16)


@pytest.mark.parametrize("cls,options", [(BernVAE, {"latent_dim": 5}), (CatVAE, {"num_latents": 2, "num_classes": 3})])
def test_discrete_vaes_take_conv_networks(cls, options):
    m = cls(input_dim=64, network="conv", image_shape=(1, 8, 8), channels=(4,), estimator="st", **options)
    x = torch.bernoulli(torch.full((6, 64), 0.4))
    assert torch.isfinite(ELBO().terms(m.model, m.guide, x).loss)
    assert m.generate(3).shape == (3, 64)


# ------------------------------------------------------------------ data sets
def test_fashion_mnist_reads_its_idx_files_with_labels(data_dir):
    if not (data_dir / "fashion_mnist").is_dir():
        pytest.skip("fashion_mnist not in the data directory")
    d = load_dataset("fashion_mnist", data_dir, download=False)
    assert (d.train.shape, d.valid.shape, d.test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    assert d.support == "eight_bit" and d.image_shape == (28, 28)
    assert torch.equal(torch.bincount(d.labels["test"]), torch.full((10,), 1000))  # balanced test set
    assert torch.allclose(d.test * 255, (d.test * 255).round())
    assert d.class_names[9] == "Ankle boot"
    b = load_dataset("dynamic_fashion_mnist", data_dir, download=False)
    assert b.support == "binary" and b.train_transform is not None and torch.equal(b.labels["test"], d.labels["test"])
    with pytest.raises(ChecksumError, match="unexpected content"):  # Fashion-MNIST is not MNIST
        _fashion_in_mnist_place(data_dir)


def _fashion_in_mnist_place(data_dir):
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(data_dir / "fashion_mnist", Path(tmp) / "mnist")
        load_dataset("mnist", tmp, download=False)


def test_split_rule_is_seeded_and_disjoint():
    a = split_indices(1000, seed=3)
    b = split_indices(1000, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [len(x) for x in a] == [800, 100, 100]
    assert not set(a[0]) & set(a[1]) and not set(a[1]) & set(a[2])
    assert not np.array_equal(split_indices(1000, seed=4)[2], a[2])
    with pytest.raises(ValueError, match="too few"):
        split_indices(2)


@pytest.fixture
def images():
    """120 real images with 8-bit grey levels: the package's small binarized MNIST, each image
    averaged with its shifts by one pixel, as uint8 (28 x 28)."""
    d = load_dataset("binarized_mnist_small")
    x = d.train[:120].reshape(-1, 28, 28)
    smooth = (x + x.roll(1, 1) + x.roll(1, 2) + x.roll((1, 1), (1, 2))) / 4
    return (smooth * 255).round().to(torch.uint8).numpy()


def test_npz_with_named_splits_and_labels(tmp_path, images):
    labels = np.arange(120) % 4
    np.savez(tmp_path / "d.npz", train=images[:80], valid=images[80:100], test=images[100:],
             train_labels=labels[:80], valid_labels=labels[80:100], test_labels=labels[100:])
    d = load_dataset("arrays", data_file=str(tmp_path / "d.npz"))
    assert (d.train.shape, d.valid.shape, d.test.shape) == ((80, 784), (20, 784), (20, 784))
    assert d.support == "eight_bit" and d.image_shape == (1, 28, 28)
    assert torch.equal(d.test, torch.from_numpy(images[100:].reshape(20, -1)).float() / 255)
    assert d.labels["valid"].tolist() == labels[80:100].tolist()
    assert list(d.files) == [str((tmp_path / "d.npz").resolve())]


def test_one_array_is_split_by_the_stated_rule(tmp_path, images):
    np.save(tmp_path / "d.npy", images)
    d = load_dataset("arrays", data_file=str(tmp_path / "d.npy"), split_seed=5)
    train, valid, test = split_indices(120, 5)
    assert torch.equal(d.valid, torch.from_numpy(images[valid].reshape(len(valid), -1)).float() / 255)
    assert d.train.shape[0] == len(train) and d.test.shape[0] == len(test)
    rgb = np.random.default_rng(0).random((30, 3, 6, 5)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", x=rgb, labels=np.arange(30) % 2)
    r = load_dataset("arrays", data_file=str(tmp_path / "rgb.npz"))
    assert r.image_shape == (3, 6, 5) and r.support == "unit_interval" and set(r.labels) == {"train", "valid", "test"}


@pytest.mark.parametrize("make,phrase", [
    (lambda p: np.save(p / "x.npy", np.full((10, 4, 4), 1.5, np.float32)), r"values in \[1.5, 1.5\].*\[0, 1\]"),
    (lambda p: np.save(p / "x.npy", np.full((10, 4, 4), np.nan, np.float32)), "NaN"),
    (lambda p: np.save(p / "x.npy", np.full((10, 4, 4), 300, np.int32)), "8-bit values 0..255"),
    (lambda p: np.save(p / "x.npy", np.zeros((10, 4, 4, 3), np.uint8)), "channels-last"),
    (lambda p: np.save(p / "x.npy", np.zeros((10, 2, 4, 4, 3), np.uint8)), "expected"),
    (lambda p: (p / "x.npy").write_bytes(b"not numpy"), "not a readable .npy"),
    (lambda p: np.savez(p / "x.npz", train=np.zeros((5, 4, 4)), test=np.zeros((5, 3, 3))), "different shapes"),
    (lambda p: np.savez(p / "x.npz", valid=np.zeros((5, 4, 4)), test=np.zeros((5, 4, 4))), "no 'train'"),
    (lambda p: np.savez(p / "x.npz", a=np.zeros((5, 4, 4)), b=np.zeros((5, 4, 4))), "one array"),
    (lambda p: np.savez(p / "x.npz", train=np.zeros((5, 4, 4)), train_labels=np.zeros(4, np.int64)), "5 non-negative"),
])
def test_bad_arrays_get_a_message_naming_the_file(tmp_path, make, phrase):
    make(tmp_path)
    path = next(tmp_path.glob("x.*"))
    with pytest.raises(ValueError, match=phrase) as info:
        load_dataset("arrays", data_file=str(path))
    assert "x.np" in str(info.value)


def _write_folder(root, images, classes=("a", "b", "c"), per=10, size=None):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per):
            img = Image.fromarray(images[k * per + i])
            (img.resize(size) if size else img).save(root / name / f"{i}.png")


def test_image_folder_with_class_subfolders(tmp_path, images):
    _write_folder(tmp_path / "imgs", images)
    d = load_dataset("image_folder", image_folder=str(tmp_path / "imgs"))
    assert d.class_names == ["a", "b", "c"] and d.image_shape == (1, 28, 28) and d.support == "eight_bit"
    n = d.train.shape[0] + d.valid.shape[0] + d.test.shape[0]
    assert n == 30 and torch.bincount(torch.cat([d.labels[s] for s in ("train", "valid", "test")])).tolist() == [10] * 3
    everything = torch.cat([d.train, d.valid, d.test])
    first = torch.from_numpy(images[0].reshape(-1)).float() / 255
    assert (everything == first).all(1).any()  # the pixels are read exactly
    small = load_dataset("image_folder", image_folder=str(tmp_path / "imgs"), image_size="12x10", color="rgb",
                         fit="crop")
    assert small.image_shape == (3, 12, 10) and small.train.shape[1] == 360
    grey_rgb = Image.fromarray(np.stack([images[0]] * 3, -1))  # an RGB file whose pixels are grey
    grey_rgb.save(tmp_path / "imgs" / "a" / "grey_rgb.png")
    assert load_dataset("image_folder", image_folder=str(tmp_path / "imgs")).image_shape == (1, 28, 28)
    tinted = np.stack([images[1], images[1] // 2, images[1]], -1)  # one image with colour: all read as RGB
    Image.fromarray(tinted).save(tmp_path / "imgs" / "b" / "tinted.png")
    rgb = load_dataset("image_folder", image_folder=str(tmp_path / "imgs"))
    assert rgb.image_shape == (3, 28, 28) and rgb.info["color"] == "rgb"


def test_image_folder_bad_input(tmp_path, images):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        load_dataset("image_folder", image_folder=str(tmp_path / "empty"))
    _write_folder(tmp_path / "mixed", images, classes=("a",), per=3)
    Image.fromarray(images[5]).resize((20, 20)).save(tmp_path / "mixed" / "a" / "odd.png")
    with pytest.raises(ValueError, match="odd.png is 20x20 pixels.*--image-size"):
        load_dataset("image_folder", image_folder=str(tmp_path / "mixed"))
    assert load_dataset("image_folder", image_folder=str(tmp_path / "mixed"), image_size=16).image_shape == (1, 16, 16)
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"no png")
    with pytest.raises(ValueError, match="x.png is not a readable image"):
        load_dataset("image_folder", image_folder=str(tmp_path / "broken"))
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        load_dataset("image_folder", image_folder=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------ streaming
def test_streamed_training_matches_the_in_memory_path(tmp_path, images):
    np.save(tmp_path / "d.npy", images)
    memory = load_dataset("arrays", data_file=str(tmp_path / "d.npy"), stream=False)
    disk = load_dataset("arrays", data_file=str(tmp_path / "d.npy"), stream=True)
    assert isinstance(disk.train, StreamedRows) and isinstance(memory.train, torch.Tensor)
    assert torch.equal(disk.train[:7], memory.train[:7]) and torch.equal(disk.valid, memory.valid)
    states = []
    for data, workers in ((memory, 0), (disk, 0), (disk, 2)):
        torch.manual_seed(0)
        vae = VAE(input_dim=784, latent_dim=3, hidden=(16,), likelihood="discretized_logistic")
        Trainer(vae, ELBO(), data.train, data.valid,
                TrainConfig(epochs=2, batch_size=16, progress=False, workers=workers)).fit()
        states.append(vae.state_dict())
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


# ------------------------------------------------------------------ command line
def _run(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def _grid_ok(path):
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 50
    return True


def test_cli_trains_on_npz_and_image_folder_and_samples_grids(tmp_path, images, capsys):
    labels = np.arange(120) % 3
    np.savez(tmp_path / "d.npz", train=images[:80], valid=images[80:100], test=images[100:],
             train_labels=labels[:80], test_labels=labels[100:])
    common = ["--epochs", "1", "--batch-size", "20", "--eval-particles", "3", "--no-progress"]
    vae = _run(["train", "vae", "--data-file", str(tmp_path / "d.npz"), "--network", "conv", "--channels", "4,8",
                "--latent-dim", "4", "--likelihood", "discretized_logistic", "--out", str(tmp_path / "vae"), *common],
               capsys)
    assert vae["test_bpd"] == pytest.approx(vae["test_nll"] / (784 * math.log(2)))
    assert {"latents", "traversals", "samples", "reconstructions"} <= set(vae["figures"])
    vq = _run(["train", "vqvae", "--data-file", str(tmp_path / "d.npz"), "--network", "conv", "--channels", "4,4",
               "--codebook-size", "8", "--out", str(tmp_path / "vq"), *common], capsys)
    assert vq["codebook_usage"] > 0
    _write_folder(tmp_path / "imgs", images, per=12)
    folder = _run(["train", "vae", "--image-folder", str(tmp_path / "imgs"), "--latent-dim", "2", "--hidden", "16",
                   "--out", str(tmp_path / "folder"), *common], capsys)  # no --likelihood: the 8-bit one is chosen
    assert "test_bpd" in folder
    for run in ("vae", "vq", "folder"):
        out = _run(["sample", str(tmp_path / run), "--num", "16"], capsys)
        assert out["grid"] == str(tmp_path / run / "sample_grid.png") and _grid_ok(out["grid"])
    config = json.loads((tmp_path / "folder" / "config.json").read_text())
    assert config["data_options"]["image_folder"] == str((tmp_path / "imgs").resolve())
    assert config["model_config"]["image_shape"] == [1, 28, 28]
    assert config["model_config"]["likelihood"] == "discretized_logistic"


def test_cli_image_options_are_checked(tmp_path, images, capsys):
    np.save(tmp_path / "d.npy", images)
    assert main(["train", "vae", "--data-file", str(tmp_path / "d.npy"), "--max-vocab", "5",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--max-vocab do not apply to data set 'arrays'" in capsys.readouterr().err
    assert main(["train", "vae", "--data-file", str(tmp_path / "d.npy"), "--image-folder", str(tmp_path),
                 "--out", str(tmp_path / "r")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["train", "vae", "--data-file", str(tmp_path / "d.npy"), "--network", "conv",
                 "--likelihood", "bernoulli", "--out", str(tmp_path / "r")]) == 2  # 8-bit data, asked-for Bernoulli
    assert "discretized_logistic" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
