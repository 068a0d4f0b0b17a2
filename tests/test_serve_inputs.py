"""What a served request carries in: images preprocessed exactly as the checkpoint's data pipeline does, clear
errors for everything else, forget sets by id or name."""

from __future__ import annotations

import base64
import io

import pytest
import torch

pytest.importorskip("litserve")

from _serve_helpers import png_b64  # noqa: E402

from wfkern.data import DatasetInfo, Preprocess, TensorImageDataset  # noqa: E402
from wfkern.data.digits import load_digits_split  # noqa: E402
from wfkern.data.imagefolder import image_transform  # noqa: E402
from wfkern.serve.inputs import BadInput, Limits, decode_image, input_spec, resolve_forget  # noqa: E402
from wfkern.train import ModelConfig  # noqa: E402

LIMITS = Limits(max_images=4, max_side=64)


def config(dataset="digits", chans=1, size=8, preprocess=None) -> ModelConfig:
    return ModelConfig("small_cnn", 10, chans, size, {}, dataset, 0, {}, preprocess or {})


@pytest.mark.parametrize("size", [8, 16])
def test_arrays_are_preprocessed_as_the_digits_split(size):
    ds = load_digits_split("test", 0, image_size=size)
    spec = input_spec(config(size=size))
    for i in (0, 7, 100):
        want = ds.get_batch(torch.tensor([i]))[0][0]
        got = decode_image({"array": ds.images[i].tolist()}, 0, spec, LIMITS)
        assert got.shape == (1, size, size) and torch.equal(got, want)


def test_png_pixels_are_scaled_and_normalised_as_uint8_datasets():
    pix = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ds = TensorImageDataset(pix.unsqueeze(0), torch.zeros(1, dtype=torch.long),
                            DatasetInfo("digits", 10, 1, 12), (0.3053,), (0.3760,))
    want = ds.get_batch(torch.tensor([0]))[0][0]
    assert torch.equal(decode_image(png_b64(pix[0]), 0, input_spec(config(size=12)), LIMITS), want)


def test_the_checkpoints_own_normalisation_wins():
    spec = input_spec(config(preprocess={"mean": [0.5], "std": [0.25]}))
    assert spec.mean == (0.5,) and spec.std == (0.25,)
    x = decode_image({"array": [[1.0] * 8] * 8}, 0, spec, LIMITS)
    assert torch.allclose(x, torch.full((1, 8, 8), 2.0))


def test_imagefolder_images_take_the_folder_transform():
    pre = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "crop_pct": 0.875, "interpolation": "bicubic"}
    spec = input_spec(config("imagefolder", 3, 32, pre))
    assert spec.from_files
    pix = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(png_b64(pix))))
    want = image_transform(32, Preprocess(tuple(pre["mean"]), tuple(pre["std"]), 0.875, "bicubic"))(img)
    got = decode_image({"data": png_b64(pix)}, 0, spec, Limits(max_side=64))
    assert got.shape == (3, 32, 32) and torch.equal(got, want)


def _png_bytes(pixels: torch.Tensor) -> bytes:
    return base64.b64decode(png_b64(pixels))


NOISE = torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("item, status, words", [
    ({"data": "not base64!"}, 400, "must be base64 text"),
    ({"data": base64.b64encode(b"GIF89a....").decode()}, 400, "must be a PNG or JPEG image"),
    ({"data": base64.b64encode(_png_bytes(NOISE)[:400]).decode()}, 400, "must be a complete PNG image"),
    ({"data": png_b64(torch.zeros(3, 8, 8, dtype=torch.uint8))}, 422, "must have 1 channel (grayscale)"),
    ({"data": png_b64(torch.zeros(8, 100, dtype=torch.uint8))}, 413, "at most 64 pixels a side, got 100x8"),
    ({"array": [[0.0] * 8] * 7 + [[0.0] * 3]}, 400, "rectangular nested array"),
    ({"array": [[[0.0] * 8] * 8] * 3}, 422, "must have 1 channel"),
    ({"array": [[2.0] * 8] * 8}, 400, "pixel values in [0, 1], got values in [2, 2]"),
    ({"array": [[0.0] * 8] * 8, "data": "x"}, 400, "with 'data' (base64 PNG/JPEG) or 'array'"),
    (5, 400, "got int"),
])
def test_bad_images_are_refused_with_one_line(item, status, words):
    with pytest.raises(BadInput) as e:
        decode_image(item, 2, input_spec(config()), LIMITS)
    assert e.value.status == status and words in str(e.value) and str(e.value).startswith("images[2]")
    assert "\n" not in str(e.value)


def test_forget_by_id_or_name():
    names = ["cat", "dog", "7", "bird"]
    assert resolve_forget(None, names) == []
    assert resolve_forget(["dog", 0, "dog", "7"], names) == [0, 1, 2]
    assert resolve_forget(3, names) == [3]
    with pytest.raises(BadInput, match="class names of the model") as e:
        resolve_forget(["cow"], names)
    assert e.value.status == 422
    with pytest.raises(BadInput, match=r"ids in \[0, 4\), got 4"):
        resolve_forget([4], names)
    with pytest.raises(BadInput, match="got True"):
        resolve_forget([True], names)


def test_jpeg_and_rgb_images():
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    pix = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    buf = io.BytesIO()
    Image.fromarray(pix.numpy()).save(buf, format="JPEG", quality=90)
    spec = input_spec(config("cifar10", 3, 32))
    assert spec.mean == (0.4914, 0.4822, 0.4465) and not spec.from_files
    decoded = pil_to_tensor(Image.open(io.BytesIO(buf.getvalue()))).float() / 255  # what the JPEG holds
    want = (decoded - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(3, 1, 1)
    got = decode_image(base64.b64encode(buf.getvalue()).decode(), 0, spec, LIMITS)
    assert got.shape == (3, 32, 32) and torch.equal(got, want)
    gray = io.BytesIO()
    Image.fromarray(pix[..., 0].numpy()).save(gray, format="JPEG")
    with pytest.raises(BadInput, match="must have 3 channels \\(RGB\\), the model's input, got a L image"):
        decode_image("data:image/jpeg;base64," + base64.b64encode(gray.getvalue()).decode(), 0, spec, LIMITS)
