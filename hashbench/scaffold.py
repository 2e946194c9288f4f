"""``hashbench new KIND NAME``: write a ready-to-install plugin package.

The package holds a pyproject.toml with the ``hashbench`` entry point, one module with a working minimal
plugin (its Params dataclass documented field by field), a README and a test that runs the conformance
checks of :mod:`hashbench.testing`. ``pip install -e`` of it makes the plugin appear in
``hashbench plugins`` and usable in any benchmark file; hashbench itself is not touched.
"""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass
from pathlib import Path

import hashbench

from . import __version__
from .errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "hashbench-{name}"
version = "0.1.0"
description = "{summary}"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["hashbench>={hashbench_version}"]

[project.optional-dependencies]
test = ["pytest>=7"]

# hashbench finds plugins through this entry-point group; the name is what HASHBENCH_LOAD_PLUGINS /
# HASHBENCH_DISABLE_PLUGINS refer to.
[project.entry-points.hashbench]
{name} = "hashbench_{name}"

[tool.setuptools]
packages = ["hashbench_{name}"]
'''

README = '''\
# hashbench-{name}

A hashbench {kind} plugin: {summary}

```bash
pip install -e .                 # registers the `hashbench` entry point `{name}`
hashbench plugins --kind {kind}   # lists `{name}` with its parameters
pytest tests                     # the conformance checks of hashbench.testing
```

Use it in a benchmark file:

```toml
{usage}
```

Edit `hashbench_{name}/__init__.py`: the class docstring's first line is the summary `hashbench plugins`
shows, and each `param(default, doc)` field of `{cls}Params` becomes a validated key of the TOML table.
Bump `version` when the behaviour changes, so cached results are recomputed. The contract of every
method is in hashbench's docs/plugins.md.
'''

TEST = '''\
"""The conformance checks of hashbench.testing: shapes, ranges, determinism, parameter validation."""

from hashbench.testing import check_{kind}

from hashbench_{name} import {cls}


def test_{name}_honours_the_{kind}_contract():
    check_{kind}({cls})
'''

ATTACK = '''\
"""{cls}: a faint fixed pattern added to images; poisons are relabelled to the target (poison-label).

A template made by `hashbench new attack {name}`: replace the pattern with your trigger.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import Attack, AttackContext, Poisoning, ThreatModel, hookimpl, param


@dataclass(frozen=True)
class {cls}Params:
    strength: float = param(0.06, "amplitude of the pattern, as a fraction of the pixel range")
    pattern_seed: int = param(0, "seed of the fixed ±1 pattern")

    def validate(self) -> None:
        if not 0 < self.strength <= 1:
            raise ValueError("strength must be in (0, 1]")


class {cls}(Attack):
    """Adds a faint fixed ±strength pattern; poisons are non-target images relabelled to the target."""

    name = "{name}"
    version = "1"
    Params = {cls}Params
    threat_model = ThreatModel(clean_label=False, needs_surrogate=False, sample_specific=False, invisible=True)

    def pattern(self, image_size: int) -> torch.Tensor:
        """The fixed trigger: ±1 per pixel and channel, a pure function of pattern_seed and the size."""
        g = torch.Generator().manual_seed(self.params.pattern_seed)
        return torch.randint(0, 2, (3, image_size, image_size), generator=g).float() * 2 - 1

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """uint8 images in, uint8 images out (the runner stores exactly what is returned)."""
        delta = self.params.strength * 255 * self.pattern(images.shape[-1])
        return (images.float() + delta).clamp(0, 255).round().to(torch.uint8)

    def poison(self, ctx: AttackContext) -> Poisoning:
        """ctx.poison_count() non-target training images, triggered and relabelled to the target."""
        train = ctx.splits.train
        indices = ctx.choose_poison_indices(~ctx.target.overlaps(train.labels), "non-target")
        labels = ctx.target.labels.expand(len(indices), -1).clone()
        return Poisoning(indices, self.trigger(train.images(indices), ctx), labels)


@hookimpl
def register_attacks(register):
    register({cls})
'''

DEFENSE = '''\
"""{cls}: reduce the colour depth of every query, an input purifier against faint triggers.

A template made by `hashbench new defense {name}`. Other defense kinds subclass InputDetector,
ModelRepair or DataFilter instead (see hashbench's docs/plugins.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import InputPurifier, hookimpl, param


@dataclass(frozen=True)
class {cls}Params:
    bits: int = param(4, "bits kept per colour channel, 1 to 8")

    def validate(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ValueError("bits must be between 1 and 8")


class {cls}(InputPurifier):
    """Quantise each query to fewer bits per channel before it is hashed."""

    name = "{name}"
    version = "1"
    Params = {cls}Params

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images in, uint8 images out: each value snapped to the centre of its quantisation bin."""
        step = 2 ** (8 - self.params.bits)
        return ((images.int() // step) * step + step // 2).clamp(0, 255).to(torch.uint8)


@hookimpl
def register_defenses(register):
    register({cls})
'''

METHOD = '''\
"""{cls}: pairwise hashing that matches code inner products to label similarity.

A template made by `hashbench new method {name}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class {cls}Params:
    alpha: float = param(0.1, "weight of the quantisation term (|u| - 1)²")

    def validate(self) -> None:
        if self.alpha < 0:
            raise ValueError("alpha must be >= 0")


class {cls}(HashMethod):
    """Within a batch, <u_i, u_j> / bits should be +1 for pairs sharing a label and -1 otherwise."""

    name = "{name}"
    version = "1"
    Params = {cls}Params

    def setup(self, setup: MethodSetup) -> None:
        """Nothing to build: the objective only looks at the batch."""

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(z)
        similar = (labels.float() @ labels.float().T > 0).float() * 2 - 1
        pairwise = (u @ u.T / u.shape[1] - similar).pow(2).mean()
        quantisation = (u.abs() - 1).pow(2).mean()
        return pairwise + self.params.alpha * quantisation


@hookimpl
def register_methods(register):
    register({cls})
'''

DATASET = '''\
"""{cls}: a tiny procedural dataset (one colour per class on noise), deterministic from its seed.

A template made by `hashbench new dataset {name}`: replace `_make` with code that reads your files from a
`root` parameter, and say in the error where you looked when they are missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import Dataset, DatasetContext, DatasetSplits, TensorImageSet, hookimpl, param


@dataclass(frozen=True)
class {cls}Params:
    image_size: int = param(32, "side of the square images")
    num_classes: int = param(5, "number of classes")
    train_per_class: int = param(40, "training images per class")
    query_per_class: int = param(10, "query images per class")
    database_per_class: int = param(60, "database images per class")
    seed: int = param(0, "generation seed (the dataset is a pure function of its parameters)")

    def validate(self) -> None:
        if self.image_size < 8 or self.num_classes < 2:
            raise ValueError("image_size must be >= 8 and num_classes >= 2")
        if min(self.train_per_class, self.query_per_class, self.database_per_class) < 1:
            raise ValueError("every split needs at least one image per class")


class {cls}(Dataset):
    """Noise images tinted with a colour per class; single-label, retrieval over the whole database."""

    name = "{name}"
    version = "1"
    Params = {cls}Params

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        palette = torch.rand(p.num_classes, 3, generator=g)
        return DatasetSplits(
            train=self._make(p.train_per_class, palette, g),
            query=self._make(p.query_per_class, palette, g),
            database=self._make(p.database_per_class, palette, g),
            class_names=[f"class_{{i}}" for i in range(p.num_classes)],
            topk=-1,
        )

    def _make(self, per_class: int, palette: torch.Tensor, g: torch.Generator) -> TensorImageSet:
        """``per_class`` images of each class: uint8 (n, 3, S, S) with one-hot float labels."""
        p = self.params
        classes = torch.arange(p.num_classes).repeat_interleave(per_class)
        noise = torch.rand(len(classes), 3, p.image_size, p.image_size, generator=g)
        images = 0.5 * noise + 0.5 * palette[classes][:, :, None, None]
        labels = torch.nn.functional.one_hot(classes, p.num_classes).float()
        return TensorImageSet(images.mul(255).round().to(torch.uint8), labels)


@hookimpl
def register_datasets(register):
    register({cls})
'''


@dataclass(frozen=True)
class Template:
    """What one plugin kind's package contains beyond the shared files."""

    module: str
    summary: str
    usage: str


TEMPLATES = {
    "attack": Template(ATTACK, "a faint fixed-pattern backdoor attack",
                       '[[attack]]\nname = "{name}"\npoison_rate = 0.05\nstrength = [0.03, 0.06]   # a list is a grid'),
    "defense": Template(DEFENSE, "a colour-depth reduction input purifier",
                        '[[defense]]\nname = "{name}"\nbits = [3, 5]'),
    "method": Template(METHOD, "a pairwise inner-product hashing objective",
                       '[victim]\nmethod = ["dpsh", "{name}"]\nmethod_params.{name} = {{ alpha = 0.1 }}'),
    "dataset": Template(DATASET, "a tiny procedural dataset",
                        '[dataset]\nname = "{name}"\nimage_size = 32'),
}
KINDS = tuple(TEMPLATES)


def class_name(name: str) -> str:
    """``my_attack`` -> ``MyAttack``."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def scaffold(kind: str, name: str, output: Path | None = None, force: bool = False) -> Path:
    """Write the plugin package for ``kind``/``name`` into ``output`` (default ``./hashbench-NAME``)."""
    if kind not in TEMPLATES:
        raise ConfigError(f"cannot scaffold a '{kind}'; choose one of {', '.join(KINDS)}")
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"plugin name '{name}' must be lower case letters, digits and '_', starting with a letter")
    cls = class_name(name)
    if keyword.iskeyword(cls) or hasattr(builtins, cls) or hasattr(hashbench, cls):
        raise ConfigError(f"plugin name '{name}' would make a class named {cls}, which is a Python keyword or "
                          "a name the plugin module already uses; choose another name")
    from .plugins import get_registry

    if name in get_registry().names(kind):
        raise ConfigError(f"a {kind} plugin named '{name}' is already installed (`hashbench plugins --kind {kind}`); "
                          "two plugins of one kind cannot share a name, so choose another")
    root = Path(output) if output is not None else Path.cwd() / f"hashbench-{name}"
    if root.exists() and any(root.iterdir()) and not force:
        raise ConfigError(f"{root} exists and is not empty; choose another --output or pass --force")
    template = TEMPLATES[kind]
    values = {"name": name, "kind": kind, "cls": cls, "summary": template.summary,
              "hashbench_version": __version__}
    values["usage"] = template.usage.format(**values)
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"hashbench_{name}/__init__.py": template.module,
        f"tests/test_{name}.py": TEST,
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))
    return root
