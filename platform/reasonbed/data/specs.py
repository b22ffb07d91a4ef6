"""Dataset specs: DomainBed's domain and class names (in DomainBed's order) and class hierarchies.

A `DatasetSpec` names the domain folders, the class folders and, optionally, super-classes used by
hierarchical rewards. Built-in specs live in the `DATASETS` registry; `folder` specs are discovered
from a tree or read from a small YAML file (`load_spec_yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reasonbed.registry import Registry


class DatasetError(ValueError):
    """Bad dataset input: a missing root, domain, class, image or spec field (named in the message)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Domains and classes of one DomainBed-layout dataset (folder names, in label order)."""

    name: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    hierarchy: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            raise DatasetError(f"dataset {self.name!r}: domains must be unique and non-empty: {self.domains}")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise DatasetError(f"dataset {self.name!r}: classes must be unique, at least 2: {self.classes}")
        seen: dict[str, str] = {}
        for group, members in self.hierarchy.items():
            for member in members:
                if member not in self.classes:
                    raise DatasetError(
                        f"dataset {self.name!r}: hierarchy group {group!r} names class {member!r}, "
                        f"which is not one of its classes"
                    )
                if member in seen:
                    raise DatasetError(
                        f"dataset {self.name!r}: class {member!r} is in groups {seen[member]!r} and {group!r}"
                    )
                seen[member] = group

    def label(self, class_name: str) -> int:
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise DatasetError(
                f"dataset {self.name!r}: class {class_name!r} is not in the spec ({', '.join(self.classes)})"
            ) from None

    def check_domain(self, domain: str) -> str:
        if domain not in self.domains:
            raise DatasetError(
                f"dataset {self.name!r} has no domain {domain!r}; its domains: {', '.join(self.domains)}"
            )
        return domain

    def display_name(self, class_name: str) -> str:
        """The class as it appears in prompts ("Alarm_Clock" -> "alarm clock")."""
        return class_name.replace("_", " ").strip().lower()

    @property
    def display_names(self) -> list[str]:
        return [self.display_name(name) for name in self.classes]

    def super_class(self, class_name: str) -> str | None:
        for group, members in self.hierarchy.items():
            if class_name in members:
                return group
        return None


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_spec(spec: DatasetSpec) -> DatasetSpec:
    DATASETS.add(spec.name, spec)
    return spec


def get_spec(name: str) -> DatasetSpec:
    """A registered spec by name (pacs, vlcs, office_home, terra_incognita, synthetic_shapes, ...)."""
    return DATASETS.get(name)


def _groups(**groups: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(members) for name, members in groups.items()}


register_spec(DatasetSpec(
    name="pacs",
    domains=("art_painting", "cartoon", "photo", "sketch"),
    classes=("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
    hierarchy=_groups(animal=("dog", "elephant", "giraffe", "horse"), artifact=("guitar", "house"),
                      human=("person",)),
    description="PACS (Li et al. 2017), DomainBed folder names",
))
register_spec(DatasetSpec(
    name="vlcs",
    domains=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    classes=("bird", "car", "chair", "dog", "person"),
    hierarchy=_groups(animal=("bird", "dog"), vehicle=("car",), furniture=("chair",), human=("person",)),
    description="VLCS (Fang et al. 2013), DomainBed folder names",
))
_OFFICE_HOME_CLASSES = (
    "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator", "Calendar",
    "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp", "Drill", "Eraser",
    "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork", "Glasses", "Hammer",
    "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse",
    "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin",
    "Radio", "Refrigerator", "Ruler", "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda",
    "Speaker", "Spoon", "TV", "Table", "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam",
)
register_spec(DatasetSpec(
    name="office_home",
    domains=("Art", "Clipart", "Product", "Real World"),
    classes=_OFFICE_HOME_CLASSES,
    hierarchy=_groups(
        electronics=("Alarm_Clock", "Batteries", "Calculator", "Computer", "Fan", "Keyboard", "Laptop",
                     "Monitor", "Mouse", "Printer", "Radio", "Speaker", "TV", "Telephone", "Webcam"),
        furniture=("Bed", "Chair", "Couch", "Curtains", "Desk_Lamp", "File_Cabinet", "Lamp_Shade", "Shelf",
                   "Table"),
        kitchen=("Bottle", "Fork", "Kettle", "Knives", "Mug", "Oven", "Pan", "Refrigerator", "Sink", "Soda",
                 "Spoon"),
        office_supplies=("Calendar", "Clipboards", "Eraser", "Folder", "Marker", "Notebook", "Paper_Clip",
                         "Pen", "Pencil", "Postit_Notes", "Push_Pin", "Ruler", "Scissors"),
        tools=("Bucket", "Drill", "Hammer", "Mop", "Screwdriver", "Trash_Can"),
        personal=("Backpack", "Bike", "Candles", "Exit_Sign", "Flipflops", "Flowers", "Glasses", "Helmet",
                  "Sneakers", "ToothBrush", "Toys"),
    ),
    description="OfficeHome (Venkateswara et al. 2017), DomainBed folder names",
))
register_spec(DatasetSpec(
    name="terra_incognita",
    domains=("location_100", "location_38", "location_43", "location_46"),
    classes=("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"),
    hierarchy=_groups(bird=("bird",), carnivore=("bobcat", "cat", "coyote", "dog", "raccoon"),
                      small_mammal=("opossum", "rabbit", "squirrel"), no_animal=("empty",)),
    description="TerraIncognita (Beery et al. 2018), DomainBed folder names",
))


def spec_from_mapping(data: Mapping[str, object], source: str) -> DatasetSpec:
    """Build a spec from a YAML-like mapping; `source` names the file in errors."""
    allowed = {"name", "domains", "classes", "hierarchy", "description"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise DatasetError(f"spec {source}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    for required in ("domains", "classes"):
        value = data.get(required)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise DatasetError(f"spec {source}: field {required!r} must be a list of names, got {value!r}")
    hierarchy = data.get("hierarchy") or {}
    if not isinstance(hierarchy, Mapping):
        raise DatasetError(f"spec {source}: field 'hierarchy' must map group -> list of classes")
    return DatasetSpec(
        name=str(data.get("name") or "folder"),
        domains=tuple(data["domains"]),  # type: ignore[arg-type]
        classes=tuple(data["classes"]),  # type: ignore[arg-type]
        hierarchy={str(group): tuple(members) for group, members in hierarchy.items()},  # type: ignore[union-attr]
        description=str(data.get("description", "")),
    )


def load_spec_yaml(path: str | Path) -> DatasetSpec:
    """A spec from a small YAML file: name, domains, classes, optional hierarchy."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"spec file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise DatasetError(f"spec file {str(path)!r} must hold a mapping")
    return spec_from_mapping(data, repr(str(path)))
