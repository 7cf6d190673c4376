"""Suite files: YAML read with ``yaml.safe_load``, validated by pydantic, errors with line numbers.

A suite names ``datasets``, ``models``, ``explainers`` and ``metrics`` (each a
list of ``{name, id?, params?}`` or a bare name) and run settings. Every
component's ``params`` are validated against that component's own ``Params``
model here, so a typo fails before any data is read or any model is loaded.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import ConfigError
from bench.registry import REGISTRIES, load_builtin_components

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}$"
KEY_RULE = "letters, digits and _ . + - (no slashes, not starting with a dot), at most 80 characters"
SECTIONS = ("datasets", "models", "explainers", "metrics")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentRef(Strict):
    """One entry of a component list: the registered ``name``, an optional ``id`` that
    tells two entries with the same name apart (it names the entry in results), and
    the component's ``params``."""

    name: str = Field(description="registered component name (see `xbench list`)")
    id: str | None = Field(None, pattern=KEY_PATTERN, description="name of this entry in results (default: name)")
    params: dict[str, Any] = Field(default_factory=dict, description="the component's parameters")
    control: bool | None = Field(
        None,
        description="explainers only: a control (a reference line every explainer must beat); random, "
        "gaussian_blob and sobel are controls by default",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("params", mode="before")
    @classmethod
    def _none_params(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def key(self) -> str:
        return self.id or self.name


class ExcludeRule(Strict):
    """Leave out grid points whose keys match every given glob (fnmatch): e.g.
    ``{model: "vit*", explainer: gradcam}``. A rule with ``metric`` drops only that metric."""

    dataset: str | None = None
    model: str | None = None
    explainer: str | None = None
    metric: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ExcludeRule:
        if not any((self.dataset, self.model, self.explainer, self.metric)):
            raise ValueError("an exclude rule needs at least one of dataset, model, explainer, metric")
        return self

    def matches(self, dataset: str, model: str, explainer: str, metric: str | None = None) -> bool:
        """True when this rule removes the (dataset, model, explainer[, metric]) grid point."""
        if self.metric is not None and metric is None:
            return False  # metric rules never drop whole cells
        pairs = ((self.dataset, dataset), (self.model, model), (self.explainer, explainer), (self.metric, metric))
        return all(pattern is None or fnmatch.fnmatchcase(value or "", pattern) for pattern, value in pairs)


class RegressionSettings(Strict):
    """How `xbench compare` flags regressions of runs of this suite."""

    tolerance: float = Field(0.0, ge=0, description="smallest |difference| that counts, for every metric")
    tolerances: dict[str, float] = Field(
        default_factory=dict, description="per-metric tolerances (metric ids as in results, e.g. deletion, runtime)"
    )


class SuiteConfig(Strict):
    """The whole suite file."""

    name: str | None = Field(None, pattern=KEY_PATTERN, description="suite name (default: the file name)")
    description: str = Field("", description="free text shown in reports")
    seed: int = Field(0, ge=0, description="seed of sampling and of every random draw")
    samples: int | dict[str, int | None] | None = Field(
        100, description="images per dataset (null = all); a mapping gives one number per dataset id"
    )
    batch_size: int = Field(32, ge=1, le=65536, description="images explained per batch")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    output: str | None = Field(None, description="run directory (default: runs/suite=<name>/run=<run id>)")
    target: Literal["auto", "label", "mapped", "predicted"] = Field(
        "auto",
        description="output to explain: label (dataset class), mapped (best model class depicting it, e.g. "
        "ImageNet classes of a VOC class), predicted (top-1), auto (label if the model predicts the "
        "dataset's classes, else mapped if a mapping exists, else predicted)",
    )
    warmup: bool = Field(True, description="one untimed explain call per cell before timing starts")
    threads: int | Literal["auto"] = Field(
        "auto",
        description="torch CPU threads: a count, or auto (one per core that other processes leave free at "
        "start-up; a thread on a busy core stalls the others); never changes results",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast the model's passes to this precision (recorded; part of each cell's identity)"
    )
    gallery: int = Field(
        16,
        ge=0,
        le=64,
        description="images per dataset whose attributions every explainer and model keeps for reports (the same "
        "images everywhere; reports show the first six side by side and each explainer's best, median and worst)",
    )
    nan_policy: Literal["declared", "exclude"] = Field(
        "declared",
        description="what an attribution that gives no answer (a constant map) scores in summaries: declared = "
        "the metric's declared value (e.g. a miss in the pointing game); exclude = left out of the mean (the row "
        "stays, with status degenerate)",
    )
    datasets: list[ComponentRef] = Field(min_length=1)
    models: list[ComponentRef] = Field(min_length=1)
    explainers: list[ComponentRef] = Field(min_length=1)
    metrics: list[ComponentRef] = Field(min_length=1)
    exclude: list[ExcludeRule] = Field(default_factory=list, description="grid points to leave out")
    regression: RegressionSettings = Field(
        default_factory=lambda: RegressionSettings(),
        description="tolerances of `xbench compare` for runs of this suite",
    )

    @field_validator("threads", mode="before")
    @classmethod
    def _thread_count(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024):
            return value
        raise ValueError("threads must be auto or a number of threads from 1 to 1024")

    @field_validator("samples")
    @classmethod
    def _positive_samples(cls, value: Any) -> Any:
        counts = value.values() if isinstance(value, dict) else [value]
        if any(n is not None and n < 1 for n in counts):
            raise ValueError("sample counts must be at least 1 (or null for all)")
        return value

    def samples_for(self, dataset_key: str) -> int | None:
        if isinstance(self.samples, dict):
            return self.samples.get(dataset_key, 100)
        return self.samples


@dataclass
class Suite:
    """A validated suite: the config plus one instantiated component per entry, by key."""

    path: Path
    config: SuiteConfig
    components: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> key -> component
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)  # YAML path -> line, for error messages

    def locate(self, section: str, key: str | None = None, *fields: str) -> tuple[str, str]:
        """(file:line, dotted field) of a setting: of the entry ``key`` in ``section`` and its
        ``params`` fields when ``key`` is given, else of the top-level ``section`` setting."""
        if key is None:
            loc: tuple[Any, ...] = (section,)
        else:
            index = [ref.key for ref in getattr(self.config, section)].index(key)
            loc = (section, index, "params", *fields) if fields else (section, index)
        known = next(loc[:i] for i in range(len(loc), -1, -1) if loc[:i] in self.lines or i == 0)
        line = self.lines.get(known)
        return (f"{self.path}:{line}" if line else str(self.path)), _dotted(loc)

    @property
    def name(self) -> str:
        return self.config.name or self.path.stem

    def run_location(self, output: str | Path | None = None, run_id: str | None = None) -> tuple[Path, str]:
        """(run directory, run id). ``output`` (the command line) or the suite's ``output`` names the
        run directory itself (the run id is then ``run_id`` or its name); by default runs go to
        ``runs/suite=<suite>/run=<run_id>`` (run id ``latest``), a Hive-partitioned layout that
        pandas, pyarrow and DuckDB read across suites and runs."""
        if run_id is not None and not re.match(KEY_PATTERN, run_id):
            raise ConfigError(f"run id {run_id!r} is not allowed", field="--run-id", fix=f"use {KEY_RULE}")
        explicit = output or self.config.output
        if explicit:
            return Path(explicit), run_id or Path(explicit).resolve().name
        rid = run_id or "latest"
        return Path("runs") / f"suite={self.name}" / f"run={rid}", rid

    @property
    def output_dir(self) -> Path:
        return self.run_location()[0]

    def refs(self, section: str) -> dict[str, ComponentRef]:
        return {ref.key: ref for ref in getattr(self.config, section)}

    @property
    def datasets(self) -> dict[str, Any]:
        return self.components["datasets"]

    @property
    def models(self) -> dict[str, Any]:
        return self.components["models"]

    @property
    def explainers(self) -> dict[str, Any]:
        return self.components["explainers"]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.components["metrics"]


# ---------------------------------------------------------------- YAML with line numbers


def _node_lines(
    node: yaml.Node, path: tuple[Any, ...] = (), out: dict[tuple[Any, ...], int] | None = None, where: str = ""
) -> dict[tuple[Any, ...], int]:
    """Map every path (keys and list indices) in a composed YAML tree to its 1-based line.

    Also refuses duplicate keys, which ``safe_load`` would silently collapse.
    """
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1})",
                    where=f"{where}:{key_node.start_mark.line + 1}",
                    field=_dotted((*path, key)),
                    fix="keep one of them",
                )
            seen[key] = key_node.start_mark.line + 1
            out[(*path, key)] = key_node.start_mark.line + 1
            _node_lines(value_node, (*path, key), out, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*path, i), out, where)
    return out


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    if not path.is_file():
        raise ConfigError(
            "suite file not found" if not path.exists() else "suite path is not a file",
            where=str(path),
            fix="give the path of a suite YAML file, e.g. suites/quickstart.yaml",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the suite file: {exc}", where=str(path), fix="check the file") from exc
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = f"malformed YAML: {exc.problem or exc}" + (f" ({exc.context})" if exc.context else "")
        fix = "fix the YAML syntax at that position (indentation, a missing colon or quote)"
        if "tag" in str(exc):
            fix = "remove the YAML tag: suites are plain data, tags that construct objects are refused"
        raise ConfigError(problem, where=f"{path}{line}", fix=fix) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", where=str(path), fix="fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"a suite must be a mapping of settings, got {type(data).__name__}",
            where=str(path),
            fix="start from suites/quickstart.yaml",
        )
    lines = _node_lines(root, where=str(path)) if root is not None else {}
    return data, lines


# ---------------------------------------------------------------- pydantic errors -> ConfigError


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (for listing allowed keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _first_model(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, tuple, dict, Union) or get_args(annotation):
        for arg in get_args(annotation):
            found = _first_model(arg)
            if found is not None:
                return found
    return None


# pydantic puts the member type of a union into error locations ("int", "dict[str,...]"): not fields.
_TYPE_TAG = re.compile(r"^(int|float|str|bool|none|(list|dict|tuple|set|literal|union)\[.*|function-.*)$")


def _to_config_error(
    exc: ValidationError,
    path: Path,
    lines: dict[tuple[Any, ...], int],
    model: type[BaseModel],
    prefix: tuple[Any, ...] = (),
) -> ConfigError:
    """One ConfigError whose text names each problem's line, field and fix."""
    messages: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        raw = tuple(err["loc"])
        if err["type"] == "extra_forbidden":  # the last element is the unknown key itself, even one named "none"
            loc = tuple(p for p in raw[:-1] if isinstance(p, int) or not _TYPE_TAG.match(str(p))) + raw[-1:]
        else:
            loc = tuple(p for p in raw if isinstance(p, int) or not _TYPE_TAG.match(str(p)))
        full = prefix + loc
        known = next((full[:i] for i in range(len(full), -1, -1) if full[:i] in lines), ())
        line = lines.get(full if err["type"] != "missing" else known, lines.get(known))
        field_name = _dotted(full) or "(top level)"
        if field_name in seen:
            continue
        seen.add(field_name)
        where = f"{path}:{line}" if line else str(path)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            allowed = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            fix = (f"did you mean {close[0]!r}? Otherwise " if close else "") + (
                f"remove it; allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
            )
            problem = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            problem, fix = "required setting is missing", f"add `{loc[-1]}`"
        else:
            got = err.get("input")
            problem = err["msg"] + (f" (got {got!r})" if not isinstance(got, dict | list) else "")
            fix = "give a value as described (see the suite reference in README.md)"
        messages.append(f"{where}: field `{field_name}`: {problem}. Fix: {fix}.")
    if len(messages) == 1:
        return _Rendered(messages[0])
    return _Rendered(f"{len(messages)} problems in the suite:\n  " + "\n  ".join(messages))


class _Rendered(ConfigError):
    """A ConfigError whose full text was composed by the caller."""

    def __init__(self, text: str):
        self.text = text
        super().__init__(text)

    def render(self) -> str:
        return getattr(self, "text", None) or super().render()


# ---------------------------------------------------------------- loading


def parse_suite(path: str | Path) -> tuple[SuiteConfig, dict[tuple[Any, ...], int]]:
    """Read and validate the suite's own structure (not yet its components' params)."""
    path = Path(path)
    data, lines = _read_yaml(path)
    try:
        return SuiteConfig.model_validate(data), lines
    except ValidationError as exc:
        raise _to_config_error(exc, path, lines, SuiteConfig) from None


def load_suite(path: str | Path) -> Suite:
    """A fully validated Suite: structure, component names, every component's params."""
    path = Path(path)
    config, lines = parse_suite(path)
    load_builtin_components()
    suite = Suite(path=path, config=config, lines=lines)
    for section in SECTIONS:
        registry = REGISTRIES[section]
        built: dict[str, Any] = {}
        for i, ref in enumerate(getattr(config, section)):
            loc = (section, i)
            where = f"{path}:{lines.get((*loc, 'name'), lines.get(loc, '?'))}"
            if ref.key in built:
                raise ConfigError(
                    f"two {section} entries are called {ref.key!r}",
                    where=where,
                    field=_dotted((*loc, "id")),
                    fix="give one of them a distinct `id`",
                )
            cls = registry.get(ref.name, where=where, field=_dotted((*loc, "name")))
            if ref.control is not None and section != "explainers":
                raise ConfigError(
                    "`control` applies to explainers only",
                    where=f"{path}:{lines.get((*loc, 'control'), lines.get(loc, '?'))}",
                    field=_dotted((*loc, "control")),
                    fix="remove it",
                )
            try:
                params = cls.Params.model_validate(ref.params)
            except ValidationError as exc:
                raise _to_config_error(exc, path, lines, cls.Params, prefix=(*loc, "params")) from None
            built[ref.key] = cls(params)
        suite.components[section] = built
    _check_cross_references(suite, lines)
    return suite


def _check_cross_references(suite: Suite, lines: dict[tuple[Any, ...], int]) -> None:
    samples = suite.config.samples
    if isinstance(samples, dict):
        for key in samples:
            if key not in suite.datasets:
                raise ConfigError(
                    f"samples names dataset {key!r}, which the suite does not define",
                    where=f"{suite.path}:{lines.get(('samples', key), '?')}",
                    field=f"samples.{key}",
                    fix=f"use one of the dataset ids: {', '.join(suite.datasets)}",
                )
