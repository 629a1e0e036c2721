"""``params.yaml`` -> validated, typed settings. Every problem is reported before any work starts,
naming the key, the value and what is valid."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from trustdd.data.datasets import DATASETS, DatasetInfo
from trustdd.data.ood_sets import GROUP_NAMES, OOD_SETS, DataFiles, UserOODSet
from trustdd.distill.base import check_mixing
from trustdd.distill.methods import METHODS
from trustdd.distributed import ParallelConfig
from trustdd.evaluation.protocol import EvalConfig
from trustdd.evaluation.scores import SCORES
from trustdd.evaluation.training_sets import DistilledSetError, load_distilled
from trustdd.experts import ExpertConfig
from trustdd.nn.networks import NETWORKS, NetSpec, check_norm
from trustdd.options import ParamsError, as_params_error, at_least, build, check_each, invalid, make, option_names
from trustdd.outliers.corruptions import CORRUPTIONS
from trustdd.outliers.sources import OE_FORMATS, SOURCES, OEConfig
from trustdd.runtime import resolve_device


@dataclass(frozen=True)
class DataParams:
    """``data``. Every section's defaults are params.yaml's values (tests/test_params.py checks it), and its
    ``check`` raises ParamsError naming the key, the value and what is valid."""

    root: str = "data/raw"  # the environment variable TRUSTDD_DATA_ROOT overrides it
    download: bool = False
    image_size: int = 0  # side of the InD images; 0 = the dataset's own (128 for the ImageNet subsets); imagefolder needs one
    train_limit: int = 12000  # cap on the InD train set, balanced over classes; 0 = the whole set
    zca: bool = False  # ZCA-whiten every network input (fitted on the InD train set)
    zca_reg: float = 0.1  # added to the covariance eigenvalues before whitening (MTT's value)
    verify: bool = True  # false: use files whose md5 is not the official one (warned, md5s recorded in ind.pt)

    def check(self) -> None:
        at_least("data.train_limit", self.train_limit, 0)
        at_least("data.image_size", self.image_size, 0)
        if self.zca and self.zca_reg <= 0:
            raise invalid("data.zca_reg", self.zca_reg, "a number > 0")


@dataclass(frozen=True)
class OODParams:
    """``ood``: the OOD test sets."""

    sets: tuple[str, ...] = ("mnist", "textures", "photos", "gaussian_noise", "uniform_noise")
    size: int = 2000  # images per OOD set, a seeded random subset (fewer when a set is smaller)
    groups: dict = field(default_factory=dict)  # {set: near | far}: overrides a set's default group
    user: tuple[UserOODSet, ...] = ()  # the user's own sets, see trustdd.data.ood_sets.UserOODSet
    optional: tuple[str, ...] = ()  # sets of ood.sets that are skipped (and reported) when their files are missing

    def check(self) -> None:
        """Registered sets, valid entries of ood.user, one name per set, and groups and optional sets
        that name chosen sets. (A set drawn from the InD dataset is refused by :func:`validate`.)"""
        for name in self.sets:
            OOD_SETS.get(name)
        at_least("ood.size", self.size, 1)
        for i, u in enumerate(self.user):
            u.check(f"ood.user[{i}]")
        names = [*self.sets, *(u.name for u in self.user)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ParamsError(f"params: ood: set name(s) {', '.join(repeated)} used twice; every OOD set needs its own name")
        if not names:
            raise invalid("ood.sets", [], "at least one OOD set (built-in in ood.sets, or your own in ood.user)")
        for name in self.optional:
            if name not in self.sets:
                raise invalid("ood.optional", name, f"one of the sets in ood.sets ({', '.join(self.sets)}); ood.user entries "
                              "take optional: true")
        for name, group in self.groups.items():
            if name not in names:
                raise invalid(f"ood.groups.{name}", group, f"a group for one of the chosen sets: {', '.join(names)}")
            if group not in GROUP_NAMES:
                raise invalid(f"ood.groups.{name}", group, f"one of {', '.join(GROUP_NAMES)}")


@dataclass(frozen=True)
class NetworkParams:
    """``network``: the net the experts, the distillation and evaluation's ``convnet`` use."""

    name: str = "convnet"
    width: int = 32  # 128 in the papers
    depth: int = 3
    norm: str = "instance"

    def check(self) -> None:
        """A registered net and norm, and sizes >= 1 (whether the depth fits the images is checked once
        their size is known, by :func:`validate`)."""
        NETWORKS.get(self.name)
        check_norm(self.norm)
        at_least("network.width", self.width, 1)
        at_least("network.depth", self.depth, 1)


@dataclass(frozen=True)
class OutlierParams:
    """``outliers``: the outlier pool."""

    source: str = "poe"
    corruptions: tuple[str, ...] = ("jigsaw", "invert", "pixelate", "speckle")
    per_type: int = 3000  # images per corruption type; 0 = as many as InD train images
    options: dict = field(default_factory=dict)  # severity knobs per corruption, e.g. {pixelate: {factor: 0.25}}
    mixing: str = "blockwise"  # blockwise | uniform: see trustdd.distill.base.MIXINGS
    oe: OEConfig = OEConfig()  # real outliers, used when source is oe

    def check(self) -> None:
        """Registered source, corruptions and OE format (each corruption's options checked without the
        images' shape: :func:`validate` checks them again with it), the mixing, and the OE settings when
        source is oe."""
        SOURCES.get(self.source)
        for name in self.corruptions:
            CORRUPTIONS.get(name)
        check_each(CORRUPTIONS, self.options, "outliers.options", "corruption")
        check_mixing(self.mixing)
        OE_FORMATS.get(self.oe.format)
        if self.source == "oe":
            self.oe.check()
        if self.source == "poe" and not self.corruptions:
            raise invalid("outliers.corruptions", [], "at least one corruption when outliers.source is poe")
        at_least("outliers.per_type", self.per_type, 0)


def _method_defaults() -> dict:
    """``{method: {option: default}}``: ``distill`` when params.yaml leaves it out."""
    defaults = {name: METHODS.get(name)() for name in METHODS}
    return {name: {key: getattr(method, key) for key in option_names(type(method))} for name, method in defaults.items()}


@dataclass(frozen=True)
class Params:
    seed: int = 0
    dataset: str = "fashion_mnist"
    ipc: int = 10
    device: str = "auto"
    method: str = "mtt"
    lambda_oe: float = 0.5
    workers: int = 2  # one-thread processes for the stages that train independent nets (experts, evaluation)
    parallel: ParallelConfig = ParallelConfig()  # torch.distributed processes of train_experts, distill, evaluate
    data: DataParams = DataParams()
    ood: OODParams = OODParams()
    network: NetworkParams = NetworkParams()
    outliers: OutlierParams = OutlierParams()
    experts: ExpertConfig = ExpertConfig()
    distill: dict = field(default_factory=_method_defaults)  # {method name: its options}, see trustdd.distill.methods
    evaluate: EvalConfig = EvalConfig()

    def check(self) -> None:
        """The top-level keys' own rules: a registered dataset and method, counts in range, and a device
        this machine has (the sections check themselves)."""
        DATASETS.get(self.dataset)
        METHODS.get(self.method)
        at_least("ipc", self.ipc, 1)
        at_least("workers", self.workers, 0)
        at_least("lambda_oe", self.lambda_oe, 0)
        if self.device not in ("auto", "cpu"):
            resolve_device(self.device)  # unknown names and devices this machine lacks fail here

    @cached_property
    def dataset_info(self) -> DatasetInfo:
        """The InD dataset's entry, resolved against the data root: for a user's own data (imagefolder,
        npy) its channels, size and classes are read from the files' metadata, once per Params; missing or
        invalid files raise DataNotFoundError (InvalidDataError) naming the file and the key, and a value
        the dataset cannot take (imagefolder's data.image_size 0) ParamsError."""
        try:
            return DATASETS.get(self.dataset).resolve(self.data_files().root, self.data.image_size)
        except ValueError as err:  # a params rule of the dataset's; file problems are DataNotFoundErrors
            raise ParamsError(f"params: {err}") from None

    def ind_shape(self) -> tuple[int, int, int]:
        """C x H x W of the InD images (and of every OOD set and outlier)."""
        return self.dataset_info.shape(self.data.image_size)

    def data_files(self) -> DataFiles:
        root = Path(os.environ.get("TRUSTDD_DATA_ROOT") or self.data.root)
        return DataFiles(root, self.data.download, self.data.verify)

    def net_spec(self) -> NetSpec:
        info = self.dataset_info
        return NetSpec(
            name=self.network.name,
            channels=info.channels,
            image_size=self.ind_shape()[-1],
            num_classes=info.num_classes,
            width=self.network.width,
            depth=self.network.depth,
            norm=self.network.norm,
        )

    def method_config(self, name: str | None = None):
        """A distillation method (the chosen one by default), built from ``distill.<name>``; the fields
        of the method's dataclass are the valid keys, missing ones take its defaults."""
        name = name or self.method
        return make(METHODS, name, self.distill.get(name))


def validate(p: Params) -> Params:
    """Every rule, before any work; raises :class:`ParamsError` naming the key, the value and what is valid.
    Each section checks its own keys; the rules that span sections follow. Every check that needs no data
    runs first: from :func:`_check_corruptions` on, the InD images' shape and classes are needed, which for
    a user's own data (imagefolder, npy) are read from its files (``p.dataset_info``)."""
    for section in (p, p.data, p.ood, p.network, p.outliers, p.experts, p.evaluate):
        _check(section.check)
    _check(p.parallel.check, p.device)
    _check(_check_ood_sets_against_dataset, p)
    _check(_check_distill, p)
    _check_corruptions(p)
    _check_scores(p)
    _check_train_limit(p)
    _check_outlier_pool(p)
    _check_network_fits(p)
    return p


def _check(check, *args) -> None:
    """Run ``check``; a ValueError it raises (which names its key) becomes a ParamsError."""
    try:
        check(*args)
    except ValueError as err:
        raise as_params_error(err) from None


def _check_ood_sets_against_dataset(p: Params) -> None:
    for name in p.ood.sets:
        OOD_SETS.get(name).check_ood_for(name, p.dataset)


def _check_distill(p: Params) -> None:
    """Every method section parses (a typo fails even when another method is chosen), and the chosen
    method fits the ipc, experts.epochs and network.norm."""
    unknown = sorted(set(p.distill) - set(METHODS.names()))
    if unknown:
        raise ParamsError(f"params: distill: unknown method section(s) {', '.join(unknown)}; valid: {', '.join(METHODS.names())}")
    for name in p.distill:
        p.method_config(name)
    p.method_config().check(ipc=p.ipc, experts_epochs=p.experts.epochs, norm=p.network.norm)


def _check_corruptions(p: Params) -> None:
    """The corruptions against the InD images they will corrupt (read for a user's own data): RGB ones
    need 3 channels, every knob (defaults included) must fit the images, and a mixing corruption needs
    batches of two."""
    used = p.outliers.corruptions if p.outliers.source == "poe" else ()
    channels = p.dataset_info.channels
    for name in used:
        if getattr(CORRUPTIONS.get(name), "requires_rgb", False) and channels != 3:
            raise ParamsError(
                f"params: outliers.corruptions: {name!r} needs RGB images, but dataset {p.dataset!r} has {channels} channel(s)"
            )
    shape = p.ind_shape()
    for name in dict.fromkeys([*p.outliers.options, *used]):
        make(CORRUPTIONS, name, p.outliers.options.get(name), shape=shape)
        low = CORRUPTIONS.get(name).min_batch
        if name in used and 0 < p.outliers.per_type < low:
            raise invalid("outliers.per_type", p.outliers.per_type, f"0 or >= {low}: {name!r} pairs images of a batch")


def _check_scores(p: Params) -> None:
    """Every score's options against the size of the set to evaluate: ipc x classes for the pipeline's own
    set; a set made elsewhere is read now (memory-mapped), not after the upstream stages ran."""
    e, spec = p.evaluate, p.net_spec()
    size = p.ipc * spec.num_classes
    if os.path.normpath(e.set) != os.path.normpath(EvalConfig.set):
        try:
            shape = (spec.channels, spec.image_size, spec.image_size)
            size = load_distilled(e.set, None, shape, spec.num_classes, mmap=True).set.x_in.shape[0]
        except DistilledSetError as err:
            raise ParamsError(f"params: {err}") from None
    for name in dict.fromkeys([*e.scores, *e.score_options]):
        make(SCORES, name, e.score_options.get(name), num_train=size)


def _check_train_limit(p: Params) -> None:
    classes = p.dataset_info.num_classes
    if p.data.train_limit and p.data.train_limit < p.ipc * classes:
        raise ParamsError(f"params: data.train_limit: {p.data.train_limit} is below ipc x classes = {p.ipc * classes}")


def _check_outlier_pool(p: Params) -> None:
    """A capped POE pool must hold the set's outliers: ipc per class block drawn from its kind (blockwise),
    and ipc x classes distinct ones for the random baseline; found here, not in evaluate's last minutes."""
    o = p.outliers
    if o.source != "poe" or not o.per_type:
        return
    classes, kinds = p.dataset_info.num_classes, len(o.corruptions)
    need = max(p.ipc if o.mixing == "blockwise" else 0, -(-p.ipc * classes // kinds))
    if o.per_type < need:
        raise ParamsError(
            f"params: outliers.per_type: {o.per_type} is too few: the set has ipc x classes = {p.ipc * classes} "
            f"outliers from {kinds} corruption(s), so each needs at least {need} images (or 0: as many as the "
            "InD train images)"
        )


def _check_network_fits(p: Params) -> None:
    try:
        p.net_spec().build()  # e.g. a depth that pools the images to nothing
    except ValueError as err:
        raise ParamsError(f"params: {err} (dataset {p.dataset!r} at {p.ind_shape()[-1]}px)") from None


def params_from_dict(raw: dict) -> Params:
    """Parsed params.yaml content -> validated Params (e.g. params.yaml merged with a preset)."""
    return validate(build(Params, raw, ""))


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a mapping that holds a key twice: PyYAML would keep the last
    value silently, while DVC refuses the file (``found duplicate key``) only once a stage has to run."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):  # a complex key: the base constructor decides
                continue
            if key in first:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found duplicate key {key!r} (first on line {first[key] + 1})", key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params: {path} not found (run from the project root)")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader) or {}
    except yaml.constructor.ConstructorError as err:
        if not str(err.problem).startswith("found duplicate key"):
            raise ParamsError(f"params: {path} is not valid YAML: {err}") from None
        line = err.problem_mark.line + 1
        raise ParamsError(f"params: {path} line {line}: {err.problem}; keep one of them") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"params: {path} is not valid YAML: {err}") from None
    return params_from_dict(raw)
