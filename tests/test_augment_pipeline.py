"""Loading and validating albumentations pipelines; bundled policies; custom transforms via plugins."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest

from vetset.core import Policy, hookimpl
from vetset.core.errors import RecipeError
from vetset.core.manager import Hooks, build_plugin_manager
from vetset.plugins.augment.pipeline import jsonable_params, load_pipeline
from vetset.plugins.augment.writer import WriterConfig, transform_one


class Invert(A.ImageOnlyTransform):
    """A custom transform, as a third-party plugin would ship it."""

    def apply(self, img, **params):
        return 255 - img

    def get_transform_init_args_names(self):
        return ()


class AcmePlugin:
    """Throwaway plugin: a custom transform under its own name, and a policy that uses it."""

    @hookimpl
    def vetset_register_transforms(self, register):
        register("acme.Invert", Invert)

    @hookimpl
    def vetset_register_policies(self, register):
        pipeline = {"transform": {"__class_fullname__": "Compose", "p": 1.0,
                                  "transforms": [{"__class_fullname__": "acme.Invert", "p": 1.0}]}}
        register(Policy("acme_invert", pipeline=pipeline, description="photographic negative"))


def test_a_saved_pipeline_loads_as_is(tmp_path, hooks):
    compose = A.Compose([A.HorizontalFlip(p=1.0), A.GaussianBlur(sigma_limit=(1.0, 2.0), p=1.0),
                         A.OneOf([A.ToGray(p=1.0), A.ChannelShuffle(p=1.0)], p=1.0)])
    for ext in ("json", "yaml"):
        path = tmp_path / f"pipe.{ext}"
        A.save(compose, str(path), data_format=ext)
        loaded = load_pipeline(str(path), hooks)
        assert A.to_dict(loaded) == A.to_dict(compose)
    assert A.to_dict(load_pipeline(A.to_dict(compose), hooks)) == A.to_dict(compose)
    # the bare inner mapping and a single transform (wrapped in a Compose) work too
    inner = A.to_dict(compose)["transform"]
    assert A.to_dict(load_pipeline(inner, hooks)) == A.to_dict(compose)
    single = load_pipeline({"__class_fullname__": "ToGray", "p": 1.0}, hooks)
    assert isinstance(single, A.Compose) and isinstance(single.transforms[0], A.ToGray)


def test_bad_transforms_and_parameters_name_the_transform(hooks):
    where = "r.yaml: stages.augment.policies.p.pipeline"
    with pytest.raises(RecipeError, match=r"r.yaml: .*unknown transform 'GausianBlur'; did you mean GaussianBlur"):
        load_pipeline({"__class_fullname__": "Compose", "transforms": [{"__class_fullname__": "GausianBlur"}]},
                      hooks, where)
    with pytest.raises(RecipeError, match=r"transform Downscale \(transform.transforms\[1\]\) rejected its "
                                          r"parameters: scale_range: .*must be >= 0 and <= 1"):
        load_pipeline({"__class_fullname__": "Compose", "transforms": [
            {"__class_fullname__": "ToGray", "p": 1.0},
            {"__class_fullname__": "Downscale", "scale_range": [2, 3], "p": 1.0}]}, hooks, where)
    with pytest.raises(RecipeError, match=r"GaussianBlur .*Argument\(s\) 'sigma' are not valid for transform GaussianBlur"):
        load_pipeline({"__class_fullname__": "GaussianBlur", "sigma": 2.0}, hooks, where)
    with pytest.raises(RecipeError, match="not an albumentations pipeline"):
        load_pipeline({"transforms": []}, hooks, where)
    with pytest.raises(RecipeError, match="cannot be read"):
        load_pipeline("/nonexistent/pipe.json", hooks, where)


def test_bundled_policies_move_the_property_they_target(hooks, hymenoptera_dir):
    """Real photo (landscape, colour): orientation -> portrait, colour -> grayscale, clarity -> blurred."""
    import cv2

    photo = str(sorted((hymenoptera_dir / "train" / "bees").glob("*.jpg"))[0])
    names = ["orientation", "colour", "clarity", "sharpen", "light", "square"]
    pipes = {n: hooks.policies[n].pipeline["transform"] for n in names}
    cfg = WriterConfig(pipes, key="t")
    from vetset.core.images import load_rgb

    src = load_rgb(photo)
    h, w = src.shape[:2]
    assert w > h and np.ptp(src.astype(int)[..., 0] - src[..., 2]) > 0

    def lap_var(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()

    for seed in range(6):
        rot, applied = transform_one(cfg, photo, "orientation", seed)
        assert rot.shape[:2] == (w, h) and applied[0][0] == "Transpose"
        gray, _ = transform_one(cfg, photo, "colour", seed)
        assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
        blur, _ = transform_one(cfg, photo, "clarity", seed)
        assert lap_var(blur) < 0.35 * lap_var(src)
        sharp, _ = transform_one(cfg, photo, "sharpen", seed)
        assert lap_var(sharp) > 1.3 * lap_var(src)
        light, _ = transform_one(cfg, photo, "light", seed)
        assert light.shape == src.shape
        sq, _ = transform_one(cfg, photo, "square", seed)
        assert sq.shape[:2] == (256, 256)
    # the same seed draws the same image; another seed another one
    a, pa = transform_one(cfg, photo, "light", 7)
    b, pb = transform_one(cfg, photo, "light", 7)
    assert np.array_equal(a, b) and json.dumps(jsonable_params(pa)) == json.dumps(jsonable_params(pb))


def test_a_policy_s_transforms_draw_independently(hooks, tmp_path):
    """Each transform of a policy fires on its own draw: flip and brightness/contrast (both p=0.5)
    co-occur about a quarter of the time, not always (the same seed in every transform did that)."""
    import cv2

    photo = tmp_path / "gradient.png"
    cv2.imwrite(str(photo), np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1)))
    cfg = WriterConfig({"light": hooks.policies["light"].pipeline["transform"]}, key="t")
    fired = [{name for name, _ in transform_one(cfg, str(photo), "light", seed)[1]} for seed in range(200)]
    flip = sum("HorizontalFlip" in f for f in fired)
    bc = sum("RandomBrightnessContrast" in f for f in fired)
    both = sum({"HorizontalFlip", "RandomBrightnessContrast"} <= f for f in fired)
    assert 70 < flip < 130 and 70 < bc < 130  # p=0.5 each
    assert 25 < both < 75  # independent: about 200 x 0.5 x 0.5 = 50; before the fix, both == flip == bc


def test_custom_transforms_and_policies_from_a_plugin():
    pm = build_plugin_manager()
    plugin = AcmePlugin()
    pm.register(plugin, name="acme")
    try:
        hooks = Hooks(pm)
        assert hooks.transforms.plugin_of("acme.Invert") == "acme"
        pipe = load_pipeline(hooks.policies["acme_invert"].pipeline, hooks, save_applied_params=True)
        img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
        out = pipe(image=img)
        assert np.array_equal(out["image"], 255 - img)
        assert [name for name, _ in out["applied_transforms"]] == ["Invert"]
    finally:
        pm.unregister(plugin)
    with pytest.raises(RecipeError, match="unknown transform 'acme.Invert'"):
        load_pipeline({"__class_fullname__": "acme.Invert"}, Hooks(build_plugin_manager()))
    # without the plugin, the class still loads by the name albumentations registered it under
    # (what A.to_dict writes for it), as A.from_dict finds it
    spec = A.to_dict(A.Compose([Invert(p=1.0)]))
    assert spec["transform"]["transforms"][0]["__class_fullname__"] == Invert.get_class_fullname()
    assert A.to_dict(load_pipeline(spec, Hooks(build_plugin_manager()))) == spec == A.to_dict(A.from_dict(spec))
    # a transform written without p gets its class's default, as when built by hand
    assert load_pipeline({"__class_fullname__": "Resize", "height": 8, "width": 8}, None).transforms[0].p == \
        A.Resize(8, 8).p


def test_applied_params_become_json():
    params = {"matrix": np.eye(3), "kernel": np.ones(100, np.float32), "alpha": np.float32(0.5),
              "shape": (4, 5, 3), "order": [np.int64(1), 2], "nan": float("nan")}
    out = jsonable_params(params)
    assert out == {"matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                   "kernel": {"shape": [100], "dtype": "float32"}, "alpha": 0.5, "shape": [4, 5, 3],
                   "order": [1, 2], "nan": None}
    json.dumps(out)
    # the fast path (no NaN) gives the same values and types, and still summarises long sequences
    del params["nan"]
    params.update(flag=np.bool_(True), nested={"pts": [(1, 2)] * 70, "k": np.uint8(7)}, key={1: "a"})
    out = jsonable_params(params)
    assert out["flag"] is True and out["nested"] == {"pts": {"length": 70}, "k": 7} and out["key"] == {"1": "a"}
    assert out["order"] == [1, 2] and isinstance(out["order"][0], int) and out["alpha"] == 0.5


def test_applied_params_are_bson_safe_whatever_a_custom_transform_returns():
    """Values a plugin's transform may put in its parameters: enum members keep their value,
    NaN in a numpy float32 becomes None, and integers MongoDB cannot store (over 8 bytes)
    become strings instead of failing the insert with bson's OverflowError."""
    import enum

    import bson

    class Mode(str, enum.Enum):
        REFLECT = "reflect"

    class Level(enum.IntEnum):
        HIGH = 2

    params = {"mode": Mode.REFLECT, Mode.REFLECT: 1, "level": Level.HIGH, "nan32": np.float32("nan"),
              "seed": np.uint64(2 ** 64 - 1), "big": 2 ** 63, "edge": [2 ** 63 - 1, -2 ** 63],
              "pts": ((np.int8(1), np.float16(0.5)),)}
    out = jsonable_params(params)
    assert out == {"mode": "reflect", "reflect": 1, "level": 2, "nan32": None, "seed": "18446744073709551615",
                   "big": "9223372036854775808", "edge": [2 ** 63 - 1, -2 ** 63], "pts": [[1, 0.5]]}
    assert type(out["mode"]) is str and type(out["level"]) is int
    assert bson.decode(bson.encode({"p": out}))["p"] == out
    json.dumps(out, allow_nan=False)


def test_at_working_size_blurs_by_a_share_of_the_image(hooks, hymenoptera_dir):
    """The same AtWorkingSize blur leaves a small and a 4x larger copy of a photo equally blurred
    at the audit's 128 px scale, where a bare GaussianBlur barely touches the large one."""
    import cv2

    from vetset.core.images import load_rgb
    from vetset.plugins.augment.transforms import AtWorkingSize

    photo = load_rgb(str(sorted((hymenoptera_dir / "train" / "ants").glob("*.jpg"))[3]))
    small = cv2.resize(photo, (320, round(320 * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_AREA)
    large = cv2.resize(photo, (1280, round(1280 * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_CUBIC)
    blur = A.GaussianBlur(sigma_limit=(3.0, 3.0), p=1.0)
    relative = load_pipeline(A.to_dict(A.Compose([AtWorkingSize([blur], size=256)])), hooks, save_applied_params=True)
    bare = A.Compose([blur])

    def sharpness_128(img):  # the audit's clarity measure: variance of the Laplacian at 128 px
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        gray = cv2.resize(gray, (128, round(128 * gray.shape[0] / gray.shape[1])), interpolation=cv2.INTER_AREA)
        return cv2.Laplacian(gray, cv2.CV_32F).var()

    out_small, out_large = relative(image=small), relative(image=large)
    assert out_small["image"].shape == small.shape and out_large["image"].shape == large.shape
    assert out_large["applied_transforms"][0] == ("AtWorkingSize", {"size": 256, "working_shape": [
        round(256 * large.shape[0] / large.shape[1]), 256]})
    s_small, s_large = sharpness_128(out_small["image"]), sharpness_128(out_large["image"])
    assert abs(s_small - s_large) / max(s_small, s_large) < 0.25
    assert sharpness_128(bare(image=large)["image"]) > 4 * s_large
    spec = A.to_dict(relative)
    assert spec["transform"]["transforms"][0]["size"] == 256
    assert A.to_dict(load_pipeline(spec, hooks)) == spec


def test_writer_workers_import_albumentations_without_torch_and_still_build_totensor():
    """The writer's forkserver preload skips albumentations' optional torch import; ToTensorV2 still resolves."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import vetset.plugins.augment._preload as pre\n"
        "assert 'albumentations' in sys.modules and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "assert 'albumentations.pytorch' not in sys.modules\n"
        "from vetset.plugins.augment.pipeline import build_pipeline\n"
        "from vetset.plugins.augment.transforms import TRANSFORMS\n"
        "flip = build_pipeline({'__class_fullname__': 'Compose', 'transforms': [\n"
        "    {'__class_fullname__': 'vetset.plugins.augment.transforms.AtWorkingSize', 'size': 16, 'transforms': [\n"
        "        {'__class_fullname__': 'HorizontalFlip', 'p': 1.0}]}]}, TRANSFORMS)\n"
        "assert 'torch' not in sys.modules, 'A.from_dict imported torch in a writer worker'\n"
        "pipe = build_pipeline({'__class_fullname__': 'Compose', 'transforms': [\n"
        "    {'__class_fullname__': 'HorizontalFlip', 'p': 1.0},\n"
        "    {'__class_fullname__': 'ToTensorV2', 'p': 1.0}]})\n"
        "import numpy as np\n"
        "out = pipe(image=np.arange(24, dtype=np.uint8).reshape(2, 4, 3))['image']\n"
        "print(type(out).__module__, tuple(out.shape), int(out[0, 0, 0]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # ToTensorV2 gives a CHW torch tensor; the flip put pixel (0, 3) first: value 9 in channel 0
    assert proc.stdout.split() == ["torch", "(3,", "2,", "4)", "9"]
