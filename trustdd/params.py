"""``params.yaml`` -> validated, typed settings. Every problem is reported before any work starts,
naming the key, the value and what is valid."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from trustdd.outliers.corruptions import CORRUPTIONS
from trustdd.data.datasets import DATASETS, DatasetInfo
from trustdd.distill.methods import METHODS, MIXINGS
from trustdd.evaluation.training_sets import DistilledSetError, load_distilled
from trustdd.distributed import ParallelConfig
from trustdd.evaluation.protocol import EvalConfig
from trustdd.experts import ExpertConfig
from trustdd.nn.networks import NETWORKS, NORMS, NetSpec
from trustdd.data.ood_sets import GROUP_NAMES, OOD_SETS, RESERVED, USER_FORMATS, DataFiles, UserOODSet
from trustdd.outliers.pool import OEConfig
from trustdd.outliers.sources import OE_FORMATS, SOURCES
from trustdd.options import ParamsError, as_params_error, at_least, build, invalid, make
from trustdd.registry import UnknownChoiceError
from trustdd.runtime import resolve_device
from trustdd.evaluation.scores import SCORES


@dataclass(frozen=True)
class DataParams:
    root: str = "data/raw"  # the environment variable TRUSTDD_DATA_ROOT overrides it
    download: bool = False
    image_size: int = 0  # side of the InD images; 0 = the dataset's own (128 for the ImageNet subsets); imagefolder needs one
    train_limit: int = 0  # cap on the InD train set, balanced over classes; 0 = the whole set
    zca: bool = False  # ZCA-whiten every network input (fitted on the InD train set)
    zca_reg: float = 0.1  # added to the covariance eigenvalues before whitening (MTT's value)
    verify: bool = True  # false: use files whose md5 is not the official one (warned, md5s recorded in ind.pt)


@dataclass(frozen=True)
class OODParams:
    sets: tuple[str, ...] = ("mnist", "textures", "photos", "gaussian_noise", "uniform_noise")
    size: int = 2000  # images per OOD set, a seeded random subset (fewer when a set is smaller)
    groups: dict = field(default_factory=dict)  # {set: near | far}: overrides a set's default group
    user: tuple[UserOODSet, ...] = ()  # the user's own sets, see trustdd.data.ood_sets.UserOODSet
    optional: tuple[str, ...] = ()  # sets of ood.sets that are skipped (and reported) when their files are missing


@dataclass(frozen=True)
class NetworkParams:
    name: str = "convnet"
    width: int = 128
    depth: int = 3
    norm: str = "instance"


@dataclass(frozen=True)
class OutlierParams:
    source: str = "poe"
    corruptions: tuple[str, ...] = ("jigsaw", "invert", "pixelate", "speckle")
    per_type: int = 0  # images per corruption type; 0 = as many as InD train images
    options: dict = field(default_factory=dict)  # severity knobs per corruption, e.g. {pixelate: {factor: 0.25}}
    mixing: str = "blockwise"  # blockwise | uniform: see trustdd.distill.base.MIXINGS
    oe: OEConfig = OEConfig()  # real outliers, used when source is oe


@dataclass(frozen=True)
class Params:
    seed: int = 0
    dataset: str = "fashion_mnist"
    ipc: int = 10
    device: str = "auto"
    method: str = "mtt"
    lambda_oe: float = 0.5
    workers: int = 0  # one-thread processes for the stages that train independent nets (experts, evaluation)
    parallel: ParallelConfig = ParallelConfig()  # torch.distributed processes of train_experts, distill, evaluate
    data: DataParams = DataParams()
    ood: OODParams = OODParams()
    network: NetworkParams = NetworkParams()
    outliers: OutlierParams = OutlierParams()
    experts: ExpertConfig = ExpertConfig()
    distill: dict = field(default_factory=dict)  # {method name: its options}, see trustdd.distill
    evaluate: EvalConfig = EvalConfig()

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
    """Cross-field and registry checks; raises :class:`ParamsError` naming the key, value and choices."""
    try:
        DATASETS.get(p.dataset)
        METHODS.get(p.method)
        NETWORKS.get(p.network.name)
        SOURCES.get(p.outliers.source)
        for name in p.ood.sets:
            OOD_SETS.get(name)
        for name in p.outliers.corruptions:
            CORRUPTIONS.get(name)
        for name in p.evaluate.scores:
            SCORES.get(name)
        OE_FORMATS.get(p.outliers.oe.format)
    except UnknownChoiceError as err:
        raise ParamsError(f"params: {err}") from None
    for name in p.outliers.options:
        if name not in CORRUPTIONS:
            raise ParamsError(f"params: outliers.options: unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS.names())}")
    unknown_methods = sorted(set(p.distill) - set(METHODS.names()))
    if unknown_methods:
        raise ParamsError(
            f"params: distill: unknown method section(s) {', '.join(unknown_methods)}; valid: {', '.join(METHODS.names())}"
        )
    if p.outliers.mixing not in MIXINGS:
        raise invalid("outliers.mixing", p.outliers.mixing, f"one of {', '.join(MIXINGS)}")
    if p.network.norm not in NORMS:
        raise invalid("network.norm", p.network.norm, f"one of {', '.join(NORMS)}")
    if p.device not in ("auto", "cpu"):
        try:
            resolve_device(p.device)  # unknown names and devices this machine lacks fail here
        except ValueError as err:
            raise ParamsError(f"params: {err}") from None
    try:
        p.parallel.check(p.device)
    except ValueError as err:
        raise ParamsError(f"params: {err}") from None
    _validate_ood(p.ood)
    for name in p.ood.sets:
        if p.dataset in OOD_SETS.get(name).same_as:
            raise invalid("ood.sets", name, f"sets other than {name!r}, which is drawn from the InD dataset {p.dataset!r}")
    if p.outliers.source == "oe":
        oe = p.outliers.oe
        if oe.format != "embedded" and not oe.path:
            raise invalid("outliers.oe.path", oe.path, f"the path to read for outliers.oe.format {oe.format!r}")
        if oe.format == "torchvision" and not oe.name:
            raise invalid("outliers.oe.name", oe.name, "a torchvision.datasets class name, e.g. CIFAR100")
        at_least("outliers.oe.max_images", oe.max_images, 1 if oe.format == "embedded" else 0)
    if p.outliers.source == "poe" and not p.outliers.corruptions:
        raise invalid("outliers.corruptions", [], "at least one corruption when outliers.source is poe")
    for key, value, low in [
        ("ipc", p.ipc, 1),
        ("data.train_limit", p.data.train_limit, 0),
        ("data.image_size", p.data.image_size, 0),
        ("ood.size", p.ood.size, 1),
        ("network.width", p.network.width, 1),
        ("network.depth", p.network.depth, 1),
        ("outliers.per_type", p.outliers.per_type, 0),
        ("experts.num_experts", p.experts.num_experts, 1),
        ("experts.epochs", p.experts.epochs, 1),
        ("experts.batch_size", p.experts.batch_size, 1),
        ("workers", p.workers, 0),
        ("evaluate.num_eval", p.evaluate.num_eval, 1),
        ("evaluate.epochs", p.evaluate.epochs, 1),
        ("evaluate.batch_size", p.evaluate.batch_size, 1),
        ("lambda_oe", p.lambda_oe, 0),
    ]:
        at_least(key, value, low)
    if isinstance(p.evaluate.lr, str) and p.evaluate.lr != "learned":
        raise invalid("evaluate.lr", p.evaluate.lr, "a number or 'learned'")
    if p.data.zca and p.data.zca_reg <= 0:
        raise invalid("data.zca_reg", p.data.zca_reg, "a number > 0")
    for name in p.distill:  # every section is parsed, so a typo fails even when another method is chosen
        p.method_config(name)
    try:
        p.method_config().check(ipc=p.ipc, experts_epochs=p.experts.epochs, norm=p.network.norm)
    except ValueError as err:
        raise as_params_error(err) from None
    # from here on the InD images' shape and classes are needed: for a user's own data (imagefolder, npy)
    # they are read from its files, so every check that needs no data has run before
    channels = p.dataset_info.channels  # a user's own data (imagefolder, npy): its files are checked here
    if p.outliers.source == "poe":
        for name in p.outliers.corruptions:
            if getattr(CORRUPTIONS.get(name), "requires_rgb", False) and channels != 3:
                raise ParamsError(
                    f"params: outliers.corruptions: {name!r} needs RGB images, but dataset {p.dataset!r} "
                    f"has {channels} channel(s)"
                )
    # every corruption's knobs (defaults included) against the InD images it will corrupt
    used = p.outliers.corruptions if p.outliers.source == "poe" else ()
    shape = p.ind_shape()
    for name in dict.fromkeys([*p.outliers.options, *used]):
        make(CORRUPTIONS, name, p.outliers.options.get(name), shape=shape)
        low = CORRUPTIONS.get(name).min_batch
        if name in used and 0 < p.outliers.per_type < low:
            raise invalid("outliers.per_type", p.outliers.per_type, f"0 or >= {low}: {name!r} pairs images of a batch")
    _validate_evaluate(p)
    info = p.dataset_info
    if p.data.train_limit and p.data.train_limit < p.ipc * info.num_classes:
        raise ParamsError(
            f"params: data.train_limit: {p.data.train_limit} is below ipc x classes = {p.ipc * info.num_classes}"
        )
    try:
        p.net_spec().build()  # e.g. a depth that pools the images to nothing
    except ValueError as err:
        raise ParamsError(f"params: {err} (dataset {p.dataset!r} at {p.ind_shape()[-1]}px)") from None
    return p


def _validate_ood(o: OODParams) -> None:
    names = list(o.sets)
    for i, u in enumerate(o.user):
        key = f"ood.user[{i}]"
        if not u.name:
            raise invalid(f"{key}.name", u.name, "a non-empty name for the set")
        if u.name in RESERVED:
            raise invalid(f"{key}.name", u.name, f"a name other than {', '.join(RESERVED)} (the group averages)")
        if u.format not in USER_FORMATS:
            raise invalid(f"{key}.format", u.format, f"one of {', '.join(USER_FORMATS)}")
        if not u.path:
            raise invalid(f"{key}.path", u.path, "the folder of images or the .npy file to read")
        if u.group not in ("",) + GROUP_NAMES:
            raise invalid(f"{key}.group", u.group, f"one of {', '.join(GROUP_NAMES)}, or empty for no group")
        names.append(u.name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ParamsError(f"params: ood: set name(s) {', '.join(repeated)} used twice; every OOD set needs its own name")
    if not names:
        raise invalid("ood.sets", [], "at least one OOD set (built-in in ood.sets, or your own in ood.user)")
    for name in o.optional:
        if name not in o.sets:
            raise invalid("ood.optional", name, f"one of the sets in ood.sets ({', '.join(o.sets)}); ood.user entries "
                        "take optional: true")
    for name, group in o.groups.items():
        if name not in names:
            raise invalid(f"ood.groups.{name}", group, f"a group for one of the chosen sets: {', '.join(names)}")
        if group not in GROUP_NAMES:
            raise invalid(f"ood.groups.{name}", group, f"one of {', '.join(GROUP_NAMES)}")


def _validate_evaluate(p: Params) -> None:
    e = p.evaluate
    if not e.architectures:
        raise invalid("evaluate.architectures", [], f"at least one of {', '.join(NETWORKS.names())}")
    for name in e.architectures:
        if name not in NETWORKS:
            raise invalid("evaluate.architectures", name, f"one of {', '.join(NETWORKS.names())}")
    if not e.scores:
        raise invalid("evaluate.scores", [], f"at least one of {', '.join(SCORES.names())}")
    for name in e.score_options:
        if name not in SCORES:
            raise ParamsError(f"params: evaluate.score_options: unknown score {name!r}; valid: {', '.join(SCORES.names())}")
    if not e.set:
        raise invalid("evaluate.set", e.set, "the distilled set to evaluate (default data/distilled/distilled.pt)")
    spec = p.net_spec()
    size = p.ipc * spec.num_classes  # the pipeline's own set: its size is known now
    if os.path.normpath(e.set) != os.path.normpath(EvalConfig.set):  # a set made elsewhere: read now (memory-mapped),
        try:  # not after the upstream stages ran
            shape = (spec.channels, spec.image_size, spec.image_size)
            loaded = load_distilled(e.set, None, shape, spec.num_classes, mmap=True)
        except DistilledSetError as err:
            raise ParamsError(f"params: {err}") from None
        size = loaded.set.x_in.shape[0]
    for name in set(e.scores) | set(e.score_options):
        make(SCORES, name, e.score_options.get(name), num_train=size)
    at_least("evaluate.full_data_epochs", e.full_data_epochs, 0)
    if not e.baseline_lr > 0:
        raise invalid("evaluate.baseline_lr", e.baseline_lr, "a number > 0")


def params_from_dict(raw: dict) -> Params:
    """Parsed params.yaml content -> validated Params (e.g. params.yaml merged with a preset)."""
    return validate(build(Params, raw, ""))


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params: {path} not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"params: {path} is not valid YAML: {err}") from None
    return params_from_dict(raw)
