"""Dataset specs: DomainBed's domain and class names (in DomainBed's order) and class hierarchies.

A `DatasetSpec` names the domain folders, the class folders and, optionally, super-classes used by
hierarchical rewards and short textual descriptions of the classes (what distinguishes each one: the
domain knowledge an evaluation prompt may carry). Built-in specs live in the `DATASETS` registry; `folder` specs are discovered
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
    descriptions: Mapping[str, str] = field(default_factory=dict)  # class -> what it looks like / tells it apart


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
        unknown = sorted(set(self.descriptions) - set(self.classes))
        if unknown:
            raise DatasetError(f"dataset {self.name!r}: descriptions name class {unknown[0]!r}, which is not one "
                               f"of its classes ({', '.join(self.classes)})")

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

    @property
    def super_classes(self) -> list[str | None]:
        """Per class index, its super-class in the hierarchy (None when ungrouped): the hierarchy reward's input."""
        return [self.super_class(name) for name in self.classes]


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
    descriptions={
        "dog": "a four-legged pet animal with a snout, floppy or pointed ears and a wagging tail",
        "elephant": "a very large grey animal with a long trunk, big ears and tusks",
        "giraffe": "a tall animal with a very long neck, long legs and a patched coat",
        "guitar": "a stringed instrument with a hollow body, a long neck and tuning pegs",
        "horse": "a large four-legged animal with hooves, a mane and a long face",
        "house": "a building with walls, a roof, windows and a door",
        "person": "a human being: a head with a face, a torso, two arms and two legs",
    },
))
register_spec(DatasetSpec(
    name="vlcs",
    domains=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    classes=("bird", "car", "chair", "dog", "person"),
    hierarchy=_groups(animal=("bird", "dog"), vehicle=("car",), furniture=("chair",), human=("person",)),
    description="VLCS (Fang et al. 2013), DomainBed folder names",
    descriptions={
        "bird": "an animal with feathers, wings and a beak",
        "car": "a road vehicle with four wheels, windows and doors",
        "chair": "a seat for one person with legs and a backrest",
        "dog": "a four-legged pet animal with a snout, ears and a tail",
        "person": "a human being: a head with a face, a torso, arms and legs",
    },
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
    descriptions={
        "Alarm_Clock": "a small clock with a dial or display and bells or a buzzer",
        "Bike": "a two-wheeled vehicle with pedals, a chain and handlebars",
        "Desk_Lamp": "a lamp on an adjustable arm standing on a desk",
        "Lamp_Shade": "a cloth or paper cover around a light bulb",
        "Laptop": "a folding computer with a screen hinged to a keyboard",
        "Monitor": "a flat screen on a stand, without a keyboard attached",
        "Mug": "a cylindrical cup with a handle",
        "Pen": "a slim writing tool with ink and a clip or cap",
        "Pencil": "a slim wooden writing stick with a graphite tip, often with an eraser",
        "TV": "a large screen for watching programmes, often on a stand or wall",
    },
))
register_spec(DatasetSpec(
    name="terra_incognita",
    domains=("location_100", "location_38", "location_43", "location_46"),
    classes=("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"),
    hierarchy=_groups(bird=("bird",), carnivore=("bobcat", "cat", "coyote", "dog", "raccoon"),
                      small_mammal=("opossum", "rabbit", "squirrel"), no_animal=("empty",)),
    description="TerraIncognita (Beery et al. 2018), DomainBed folder names",
    descriptions={
        "bird": "an animal with feathers and wings, often small in the frame",
        "bobcat": "a wild cat with a short bobbed tail, tufted ears and a spotted coat",
        "cat": "a small domestic cat with a long tail",
        "coyote": "a wild dog-like animal with a narrow snout, pointed ears and a bushy tail",
        "dog": "a domestic dog, often near people or on a leash",
        "empty": "a camera-trap frame with no animal: only ground, plants or sky",
        "opossum": "a grey marsupial with a white pointed face and a bare tail",
        "rabbit": "a small animal with long ears and a short fluffy tail",
        "raccoon": "a masked face, a grey coat and a ringed tail",
        "squirrel": "a small rodent with a bushy tail, often climbing",
    },
))


def spec_from_mapping(data: Mapping[str, object], source: str) -> DatasetSpec:
    """Build a spec from a YAML-like mapping; `source` names the file in errors."""
    allowed = {"name", "domains", "classes", "hierarchy", "description", "descriptions"}
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
    descriptions = data.get("descriptions") or {}
    if not isinstance(descriptions, Mapping) or not all(isinstance(v, str) for v in descriptions.values()):
        raise DatasetError(f"spec {source}: field 'descriptions' must map class -> text")
    return DatasetSpec(
        name=str(data.get("name") or "folder"),
        domains=tuple(data["domains"]),  # type: ignore[arg-type]
        classes=tuple(data["classes"]),  # type: ignore[arg-type]
        hierarchy={str(group): tuple(members) for group, members in hierarchy.items()},  # type: ignore[union-attr]
        description=str(data.get("description", "")),
        descriptions={str(name): text for name, text in descriptions.items()},
    )


def load_spec_yaml(path: str | Path) -> DatasetSpec:
    """A spec from a small YAML file: name, domains, classes, optional hierarchy and descriptions."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"spec file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise DatasetError(f"spec file {str(path)!r} must hold a mapping")
    return spec_from_mapping(data, repr(str(path)))
