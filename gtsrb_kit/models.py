"""Bundled baseline CNNs for GTSRB (``docs/training.md``): the Fidle course's ``v1``, ``v2``,
``v3``, ``v3-bn``, and ``vgg-bn`` (the default), ``stn-vgg`` (``vgg-bn`` behind a spatial
transformer) and ``resnet-small``.

Every model takes ``float32`` images in ``[0, 1]`` of any size >= 16 x 16 and ends in a softmax.
TensorFlow/Keras is imported when a model is built, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from gtsrb_kit.classes import NUM_CLASSES
from gtsrb_kit.errors import ConfigError

DEFAULT_MODEL = "vgg-bn"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder, a one-line description and its peak AdamW learning rate."""

    name: str
    description: str
    builder: Callable[..., Any]
    learning_rate: float = 1e-3


MODELS: dict[str, ModelSpec] = {}


def _register(name: str, description: str, *, learning_rate: float = 1e-3) -> Callable[[Callable[..., Any]], Any]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        MODELS[name] = ModelSpec(name, description, fn, learning_rate)
        return fn

    return wrap


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape {input_shape!r} must be (height, width, channels)")
    if shape[0] < 16 or shape[1] < 16:
        raise ConfigError(f"input_shape {input_shape!r} is too small: images must be at least 16x16")
    return shape  # type: ignore[return-value]


@_register("v1", "Fidle GTSRB v1: 2 conv (96, 192) + dense 1500, dropout")
def _v1(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    from keras import layers

    return [
        layers.Conv2D(96, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.2),
        layers.Conv2D(192, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(1500, activation="relu"),
        layers.Dropout(0.5),
    ]


@_register("v2", "Fidle GTSRB v2: 3 conv (32, 64, 128) + dense 3500, heavy dropout")
def _v2(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    from keras import layers

    return [
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.5),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.5),
        layers.Conv2D(128, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.5),
        layers.Flatten(),
        layers.Dense(3500, activation="relu"),
        layers.Dropout(0.5),
    ]


def _v3_layers(batch_norm: bool) -> list[Any]:
    from keras import layers

    out: list[Any] = []
    for filters in (32, 64, 128):
        for _ in range(2):
            out.append(layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm))
            if batch_norm:
                out.append(layers.BatchNormalization())
            out.append(layers.Activation("relu"))
        out.append(layers.MaxPooling2D(2))
        out.append(layers.Dropout(0.2 if batch_norm else 0.4))
    out += [layers.Flatten(), layers.Dense(512, use_bias=not batch_norm)]
    if batch_norm:
        out.append(layers.BatchNormalization())
    out += [layers.Activation("relu"), layers.Dropout(0.5)]
    return out


@_register("v3", "Fidle GTSRB v3: 3 x (2 conv 32/64/128 + pool) + dense 512, dropout 0.4/0.5")
def _v3(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    return _v3_layers(batch_norm=False)


@_register("v3-bn", "Fidle GTSRB v3 with batch norm (the course's second 'v3')", learning_rate=3e-3)
def _v3_bn(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    return _v3_layers(batch_norm=True)


# Keras' default BN momentum (0.99) leaves the moving statistics far from the data after the
# ~100 steps of a short run on a small dataset, and validation accuracy collapses; 0.9 settles
# within a few dozen steps and costs nothing on long runs.
BN_MOMENTUM = 0.9
#: The layer of a spatial-transformer model whose output is the affine map (see :func:`spatial_transform`).
THETA_LAYER = "affine"
#: The hidden layer of its localization net, whose features the affine map is made from.
LOCALIZATION_LAYER = "localization"


def _conv_bn(x: Any, filters: int, *, strides: int = 1, act: bool = True, momentum: float = BN_MOMENTUM) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization(momentum=momentum)(x)
    return layers.Activation("relu")(x) if act else x


@_register("vgg-bn", "small VGG: conv 32 | 2x64 | 2x128 | 256, batch norm, global pooling (default)",
           learning_rate=3e-3)
def _vgg_bn(
    input_shape: tuple[int, int, int], num_classes: int, *, width: int = 32, dropout: float = 0.3,
    bn_momentum: float = BN_MOMENTUM,
) -> Any:
    from keras import layers

    def body(x: Any) -> Any:
        for multiple, pool in ((1, True), (2, False), (2, True), (4, False), (4, True), (8, False)):
            x = _conv_bn(x, multiple * width, momentum=bn_momentum)
            if pool:
                x = layers.MaxPooling2D(2)(x)
        x = layers.GlobalAveragePooling2D()(x)
        return layers.Dropout(dropout)(x)

    return body


@_register("stn-vgg", "vgg-bn behind a spatial transformer: a small localization net predicts an affine warp of the input",
           learning_rate=3e-3)
def _stn_vgg(
    input_shape: tuple[int, int, int], num_classes: int, *, width: int = 32, dropout: float = 0.3,
    bn_momentum: float = BN_MOMENTUM, loc_width: int = 32,
) -> Any:
    import keras
    from keras import layers

    classifier = _vgg_bn(input_shape, num_classes, width=width, dropout=dropout, bn_momentum=bn_momentum)

    def body(x: Any) -> Any:
        loc = layers.MaxPooling2D(2)(x)
        for multiple in (1, 2):
            loc = layers.MaxPooling2D(2)(_conv_bn(loc, multiple * loc_width, momentum=bn_momentum))
        # Batch norm before the activation: without it, at this learning rate, the features grew until
        # every ReLU died (or every tanh saturated) within a few epochs, which froze the map at theta's
        # bias: one fixed crop for every image. Normalized, they keep varying from image to image.
        loc = layers.Dense(64, use_bias=False)(layers.Flatten()(loc))
        loc = layers.BatchNormalization(momentum=bn_momentum)(loc)
        loc = layers.Activation("relu", name=LOCALIZATION_LAYER)(loc)
        # Zero weights and the identity as bias: training starts from vgg-bn on the unwarped image.
        theta = layers.Dense(6, kernel_initializer="zeros", dtype="float32", name=THETA_LAYER,
                             bias_initializer=keras.initializers.Constant([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))(loc)
        return classifier(custom_objects()["gtsrb_kit>AffineWarp"](dtype="float32", name="warp")([x, theta]))

    return body


def affine_points(theta: Any, height: int, width: int) -> Any:
    """Where the affine maps ``theta`` ``(batch, 6)`` send each pixel of a ``height x width`` grid.

    Returns:
        ``(batch, 2, height * width)``: x and y, row by row, in the ``[-1, 1]`` coordinates of
        :func:`spatial_transform`.
    """
    from keras import ops

    ys, xs = ops.meshgrid(ops.linspace(-1.0, 1.0, height), ops.linspace(-1.0, 1.0, width), indexing="ij")
    grid = ops.stack([ops.reshape(xs, [-1]), ops.reshape(ys, [-1]), ops.ones([height * width])])
    return ops.einsum("bij,jk->bik", ops.reshape(ops.cast(theta, "float32"), (-1, 2, 3)), grid)


def spatial_transform(images: Any, theta: Any) -> Any:
    """Bilinear samples of ``images`` at an affine grid (the sampler of a spatial transformer).

    Args:
        images: ``(batch, height, width, channels)`` float tensor or array.
        theta: ``(batch, 6)``: the affine map ``[[a, b, tx], [c, d, ty]]`` from output to input
            coordinates, both in ``[-1, 1]`` (``[1, 0, 0, 0, 1, 0]`` is the identity). Points that
            fall outside take the nearest border pixel.

    Returns:
        The warped images, shaped like ``images``; differentiable in both arguments.
    """
    from keras import ops

    h, w, c = (int(v) for v in images.shape[1:])
    src = affine_points(theta, h, w)
    x = ops.clip((src[:, 0] + 1.0) * (0.5 * (w - 1)), 0.0, w - 1.0)
    y = ops.clip((src[:, 1] + 1.0) * (0.5 * (h - 1)), 0.0, h - 1.0)
    x0, y0 = ops.floor(x), ops.floor(y)
    x1, y1 = ops.minimum(x0 + 1.0, w - 1.0), ops.minimum(y0 + 1.0, h - 1.0)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    flat = ops.reshape(ops.cast(images, "float32"), (-1, c))
    base = (ops.arange(ops.shape(src)[0], dtype="int32") * (h * w))[:, None]

    def at(yy: Any, xx: Any) -> Any:
        return ops.take(flat, base + ops.cast(yy, "int32") * w + ops.cast(xx, "int32"), axis=0)

    out = ((at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx) * (1.0 - wy)
           + (at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx) * wy)
    return ops.reshape(out, (-1, h, w, c))


@cache
def custom_objects() -> dict[str, Any]:
    """The Keras layers of the bundled models that Keras does not ship, by registered name.

    Loading a saved model needs them (:func:`gtsrb_kit.evaluate.load_model` passes them).
    """
    import keras

    @keras.saving.register_keras_serializable(package="gtsrb_kit")
    class AffineWarp(keras.layers.Layer):
        """``[images, theta] -> spatial_transform(images, theta)``."""

        def call(self, inputs: Any) -> Any:
            return spatial_transform(*inputs)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape[0]

    return {"gtsrb_kit>AffineWarp": AffineWarp}


@_register("resnet-small", "small ResNet: stem 32, 3 stages x 2 residual blocks (32/64/128), global pooling",
           learning_rate=3e-3)
def _resnet_small(
    input_shape: tuple[int, int, int], num_classes: int, *, width: int = 32, dropout: float = 0.2,
    bn_momentum: float = BN_MOMENTUM,
) -> Any:
    from keras import layers

    def block(x: Any, filters: int, strides: int) -> Any:
        shortcut = x
        y = _conv_bn(x, filters, strides=strides, momentum=bn_momentum)
        y = _conv_bn(y, filters, act=False, momentum=bn_momentum)
        if strides != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(shortcut)
            shortcut = layers.BatchNormalization(momentum=bn_momentum)(shortcut)
        return layers.Activation("relu")(layers.Add()([y, shortcut]))

    def body(x: Any) -> Any:
        x = _conv_bn(x, width, momentum=bn_momentum)
        for stage, filters in enumerate((width, 2 * width, 4 * width)):
            x = block(x, filters, 1 if stage == 0 else 2)
            x = block(x, filters, 1)
        x = layers.GlobalAveragePooling2D()(x)
        return layers.Dropout(dropout)(x)

    return body


def list_models() -> list[tuple[str, str]]:
    """Names and one-line descriptions of the bundled models, in registry order."""
    return [(spec.name, spec.description) for spec in MODELS.values()]


def default_learning_rate(name: str) -> float:
    """Peak learning rate of AdamW for a model (batch-normalised models take a larger one).

    Raises:
        ConfigError: unknown model.
    """
    check_model(name)
    return MODELS[name].learning_rate


def check_model(name: str, options: dict[str, Any] | None = None) -> None:
    """Check a model name and builder options.

    Raises:
        ConfigError: unknown model, or an option its builder does not take.
    """
    import inspect

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)} (see `gtsrb-kit models`)")
    params = inspect.signature(MODELS[name].builder).parameters
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)} "
                          f"(its options: {', '.join(known) or 'none'})")


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int = NUM_CLASSES, **kw: Any) -> Any:
    """Build an uncompiled Keras model from the registry.

    Args:
        name: A key of :data:`MODELS` (see :func:`list_models`).
        input_shape: ``(height, width, channels)`` of the input images.
        num_classes: Size of the softmax output.
        **kw: Extra builder options (e.g. ``width`` or ``dropout`` for ``vgg-bn``/``resnet-small``).

    Returns:
        A ``keras.Model`` named after ``name`` taking ``float32`` images in ``[0, 1]``.

    Raises:
        ConfigError: Unknown model name, unusable input shape or builder option.
    """
    check_model(name)
    shape = _check_shape(input_shape)
    try:
        body = MODELS[name].builder(shape, num_classes, **kw)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept options {sorted(kw)}: {exc}") from None
    try:
        return _assemble(name, body, shape, num_classes)
    except (ValueError, TypeError) as exc:  # Keras rejects a layer setting or a too-small feature map
        first = " ".join(str(exc).split())[:200]
        if kw:
            raise ConfigError(f"model {name!r} cannot be built with options "
                              f"{', '.join(f'{k}={v!r}' for k, v in kw.items())} for {shape[0]}x{shape[1]}x{shape[2]} "
                              f"inputs ({first}); choose other --model-option values") from None
        raise ConfigError(f"model {name!r} cannot be built for {shape[0]}x{shape[1]}x{shape[2]} inputs ({first}); "
                          "choose another --model or a dataset cooked at a larger --size") from None


def _assemble(name: str, body: Any, shape: tuple[int, int, int], num_classes: int) -> Any:
    """Input -> body (a list of layers or a function) -> float32 softmax, as a ``keras.Model``."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=shape, name="image")
    if isinstance(body, list):
        x = inputs
        for layer in body:
            x = layer(x)
    else:
        x = body(inputs)
    # float32 softmax keeps mixed-precision training numerically safe.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))


def count_params(name: str, input_shape: tuple[int, int, int] = (48, 48, 3), num_classes: int = NUM_CLASSES) -> int:
    """Number of parameters of a registered model for a given input shape."""
    return int(build_model(name, input_shape, num_classes).count_params())


_MIXED = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16")


def _float32_config(obj: Any) -> Any:
    """A model config with every layer policy and recorded tensor dtype of mixed precision made float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" and obj.get("config", {}).get("name") in _MIXED:
            return {**obj, "config": {**obj["config"], "name": "float32"}}
        return {k: ("float32" if k == "dtype" and v in _MIXED else _float32_config(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def as_float32(model: Any) -> Any:
    """``model`` computing in float32: the same weights without the casts of mixed precision.

    Mixed-precision training keeps float32 weights, so nothing is lost; the kept model then runs
    (and exports to ONNX and LiteRT) on any device, also one without fast float16 or bfloat16.
    Returns ``model`` itself when it already computes in float32.
    """
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    clone = keras.Model.from_config(_float32_config(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone
